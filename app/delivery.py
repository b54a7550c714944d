"""Exactly-once delivery of claimed notifications.

A check claims notifications and stores each email's payload in a batch (one transaction, with
the new state). A batch is then sent in three short steps, none holding a transaction open while
Resend answers:

1. lease: one UPDATE on the batch's row takes a lease (it expires, so a sender that dies frees
   it) and, at the first attempt, freezes the batch's payload. Committed.
2. send: the frozen payload, with the batch key as Resend's Idempotency-Key.
3. record: per email delivered (with Resend's id) or refused (an invalid address: that one email,
   with the reason); the batch is closed and its payload dropped. A failure that may pass (429,
   5xx, 401/403, a key still in flight) only drops the lease: the sweep retries.

If the answer is lost or the worker dies, the batch stays open and the sweep sends the same bytes
under the same key: Resend replays its first answer instead of sending again. Resend remembers a
key for 24 hours, so a batch still open after 23 hours is given up (recorded with the reason)
rather than risk a duplicate.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import redis

from app import db
from app.mailer import SendFailed
from app.settings import hostname

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=23)
SWEEP_GRACE_SECONDS = 60  # leave fresh batches to the check that created them
# Longer than the longest send (4 attempts of at most 15 s plus backoff, app.mailer): a live
# sender never loses its lease; a dead one's batch is free again within minutes.
LEASE_SECONDS = 300
SWEEP_LOCK_SECONDS = 15 * 60


def _lease_owner() -> str:
    return f"{hostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def deliver_batch(services, batch_key: str) -> int:
    """Send one batch if it is open and nobody else is sending it; the emails delivered now."""
    owner = _lease_owner()
    with db.transaction(services.pool) as conn:
        batch = db.lease_batch(conn, batch_key, owner, LEASE_SECONDS)
        if batch is None:
            return 0  # delivered already, given up, or another sender holds the lease
        if datetime.now(timezone.utc) - batch["created_at"] > IDEMPOTENCY_WINDOW:
            reason = "undelivered past Resend's idempotency window; not resent to avoid a duplicate"
            db.fail_open_rows(conn, batch_key, reason)
            db.close_batch(conn, batch_key, delivered=False, error=reason)
            log.error("batch %s given up: past the idempotency window", batch_key)
            return 0
        if batch["payload"] is None:
            ids, emails = db.freeze_batch(conn, batch_key)
            if not ids:  # every email was cancelled (seats filled, watch deleted) before a send
                db.close_batch(conn, batch_key, delivered=True, error="nothing left to send")
                return 0
        else:
            ids, emails = [str(i) for i in batch["delivery_ids"]], batch["payload"]
    # The lease is committed: no transaction or row lock is held while Resend answers.
    try:
        result = services.mailer.send_batch(emails, batch_key)
    except SendFailed as exc:
        with db.transaction(services.pool) as conn:
            if exc.permanent:
                db.mark_failed(conn, dict.fromkeys(ids, str(exc)))
                db.close_batch(conn, batch_key, delivered=False, error=str(exc), status=exc.status)
            else:
                db.note_attempt(conn, ids, str(exc))
                db.release_batch(conn, batch_key, owner, exc.status, str(exc))
        log.error("batch %s (%d emails) not delivered%s: %s", batch_key, len(ids),
                  "" if exc.permanent else ", the sweep will retry", exc)
        return 0
    refused = {ids[i]: f"refused by Resend: {reason}" for i, reason in result.errors.items()}
    sent = [(nid, rid) for i, (nid, rid) in enumerate(zip(ids, result.ids)) if i not in result.errors]
    with db.transaction(services.pool) as conn:
        db.mark_delivered(conn, [n for n, _ in sent], [r for _, r in sent])
        db.mark_failed(conn, refused)
        db.close_batch(conn, batch_key, delivered=True, status=200,
                       error=f"{len(refused)} refused" if refused else None)
    for nid, reason in refused.items():
        log.error("batch %s: email %s refused, not retried: %s", batch_key, nid, reason)
    log.info("batch %s delivered: %d emails", batch_key, len(sent))
    return len(sent)


def sweep(services, grace_seconds: float = SWEEP_GRACE_SECONDS) -> dict:
    """Deliver every open batch older than the grace period, and drop expired payloads.

    One sweep at a time across all hosts (a slow Resend must not let sweeps pile up on every
    worker); one failing batch is logged and the rest still go.
    """
    lock = services.redis.lock(services.keys.sweep_lock, timeout=SWEEP_LOCK_SECONDS,
                               blocking=False)
    if not lock.acquire():
        log.info("sweep skipped: another sweep is running")
        return {"batches": 0, "delivered": 0, "skipped": True}
    try:
        with db.transaction(services.pool) as conn:
            keys = db.open_batch_keys(conn, grace_seconds)
            pruned = db.prune_payloads(conn)
        delivered = errors = 0
        for key in keys:
            try:
                delivered += deliver_batch(services, key)
            except Exception:  # a bad batch or a blip must not starve the rest
                errors += 1
                log.exception("sweep: batch %s failed; the next sweep retries it", key)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # expired while we worked: nothing to release
    if keys or pruned:
        log.info("sweep: %d batches looked at, %d emails delivered, %d errors, %d payloads pruned",
                 len(keys), delivered, errors, pruned)
    out = {"batches": len(keys), "delivered": delivered}
    if errors:
        out["errors"] = errors
    return out
