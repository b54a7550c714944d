"""Exactly-once delivery of claimed notifications, never stale and never silent.

A check claims notifications and stores each email's payload in a batch (one transaction, with
the new state). A batch is then sent in three short steps, none holding a transaction open while
Resend answers:

1. lease: one UPDATE on the batch's row takes a lease (it expires, so a sender that dies frees
   it). At the first attempt the batch's payload is frozen as claimed. At a later attempt it
   depends on whether Resend may hold it: if an earlier attempt went unanswered (5xx, a read
   timeout, a key still in flight, a sender killed mid-request: the doubt is recorded when the
   attempt starts), the frozen bytes go again under the same key, so Resend
   replays instead of sending twice. If every attempt was answered "not sent" (401/403, a
   refused sender, 429) or never connected, the batch is re-checked against the section's current
   state (app.mail.recheck) and rebuilt, under a new key generation: emails no longer true are
   cancelled, the rest carry the current figure and the current sender. Committed.
2. send: the payload, with the batch's key as Resend's Idempotency-Key.
3. record: per email delivered (with Resend's id), refused for its recipient (final, with Resend's
   reason) or refused for our sender (waits: the operator fixes NOTIFICATION_FROM_EMAIL); the
   batch is closed (delivered, or failed when every email was refused) and its payload dropped.
   A failure that may pass (429, 5xx, 401/403, a refused sender, a key still in flight) only
   drops the lease and sets when to try again (backoff): the sweep retries.

Resend remembers a key for 24 hours, so a batch still open after 23 hours is given up: "unknown"
when a send of it may have been accepted, "failed" when none was.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import redis

from app import db
from app.db import batches
from app.mail import recheck, retention
from app.mail.mailer import SendFailed, is_sender_error
from app.settings import hostname

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=23)
SWEEP_GRACE_SECONDS = 60  # leave fresh batches to the check that created them
# Longer than the longest send (4 attempts of at most 15 s plus backoff, app.mail.mailer): a live
# sender never loses its lease; a dead one's batch is free again within minutes.
LEASE_SECONDS = 300
SWEEP_LOCK_SECONDS = 15 * 60
# Between attempts of one batch: the first retry at the next sweep, then 5, 10, 20, 40 minutes and
# hourly, so a refusal the operator must fix is not hammered for 23 hours (about 26 attempts).
RETRY_BASE_SECONDS = 300
RETRY_MAX_SECONDS = 3600


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt of a batch."""
    if attempts <= 1:
        return 0.0
    return float(min(RETRY_BASE_SECONDS * 2 ** (attempts - 2), RETRY_MAX_SECONDS))


def idempotency_key(batch_key: str, generation: int) -> str:
    """Generation 0 is the batch key itself; a rebuilt batch (never accepted) gets a new one."""
    return batch_key if not generation else f"{batch_key}.r{generation}"


def _lease_owner() -> str:
    return f"{hostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def _give_up(conn, batch: dict) -> None:
    if batch["maybe_sent_at"] is not None:
        outcome = "unknown"
        reason = ("undelivered past Resend's idempotency window; a send of it may have been accepted "
                  "(its answer never came): not resent, to avoid a duplicate")
    else:
        outcome = "failed"
        reason = "undelivered past Resend's idempotency window; Resend never accepted it"
    batches.fail_open_rows(conn, batch["batch_key"], reason, outcome)
    batches.close_batch(conn, batch["batch_key"], outcome=outcome, error=reason)
    log.error("batch %s given up (%s): past the idempotency window", batch["batch_key"], outcome)


def _emails_for(conn, services, batch: dict, encoded=None) -> tuple[list[str], list[dict], int]:
    """(delivery row ids, emails, key generation) for this attempt."""
    key, generation = batch["batch_key"], batch["generation"]
    frozen = [str(i) for i in batch["delivery_ids"] or []], batch["payload"]
    if batch["maybe_sent_at"] is not None and recheck.possible(batch):
        # Resend may hold this key (issue 26): re-checked all the same, and the key kept. An email
        # no longer true is cancelled (at most the copy Resend may have accepted went out, and it
        # was true then); the rest, if they changed, go rebuilt under the same key: Resend sends
        # them if it never took the first bytes, and answers 409 invalid_idempotent_request if it
        # did (then they were delivered, see deliver_batch). Unchanged: the very bytes, replayed.
        ids, emails = recheck.rebuild(conn, services, batch)
        if not ids:
            return [], [], generation
        if ids == frozen[0] and emails == frozen[1]:
            return frozen[0], frozen[1], generation
        return ids, batches.freeze_rebuilt(conn, key, ids, emails, generation), generation
    if batch["maybe_sent_at"] is not None or (batch["payload"] is not None and not recheck.possible(batch)):
        # Resend may hold this key: exactly the bytes it may have accepted.
        return frozen[0], frozen[1], generation
    if batch["attempts"] == 1 or not recheck.possible(batch):
        # the first attempt: the emails as claimed (as encoded when stored, if none was cancelled)
        ids, emails = batches.freeze_batch(conn, key, encoded)
        return ids, emails, generation
    ids, emails = recheck.rebuild(conn, services, batch)
    if ids:
        generation += 1
        emails = batches.freeze_rebuilt(conn, key, ids, emails, generation)
    return ids, emails, generation


def deliver_batch(services, batch_key: str, encoded=None) -> int:
    """Send one batch if it is open and nobody else is sending it; the emails delivered now.
    `encoded`: what app.db.batches.add_batch returned for it, when the caller stored it."""
    owner = _lease_owner()
    with db.transaction(services.pool) as conn:
        batch = batches.lease_batch(conn, batch_key, owner, LEASE_SECONDS)
        if batch is None:
            return 0  # delivered already, given up, or another sender holds the lease
        if datetime.now(timezone.utc) - batch["created_at"] > IDEMPOTENCY_WINDOW:
            _give_up(conn, batch)
            return 0
        ids, emails, generation = _emails_for(conn, services, batch, encoded)
        if not ids:  # every email was cancelled (seats filled, watch deleted) before Resend took it
            batches.close_batch(conn, batch_key, outcome="cancelled", error="nothing left to send")
            log.info("batch %s cancelled: no email of it is still true", batch_key)
            return 0
        batches.mark_in_flight(conn, batch_key)
    doubted = batch["maybe_sent_at"] is not None  # before this attempt
    retry_at = datetime.now(timezone.utc) + timedelta(seconds=retry_delay(batch["attempts"]))
    # The lease is committed: no transaction or row lock is held while Resend answers.
    try:
        result = services.mailer.send_batch(emails, idempotency_key(batch_key, generation))
    except SendFailed as exc:
        maybe = exc.maybe_sent or doubted
        if doubted and exc.error_type == "invalid_idempotent_request":
            # a re-checked batch under the key of an attempt Resend had accepted: it went then
            with db.transaction(services.pool) as conn:
                batches.mark_delivered(conn, ids, [None] * len(ids))
                batches.close_batch(conn, batch_key, outcome="delivered", status=409,
                                    error="delivered by an earlier attempt (Resend kept its key)")
            log.info("batch %s: Resend had accepted an earlier attempt; %d emails recorded delivered",
                     batch_key, len(ids))
            return len(ids)
        with db.transaction(services.pool) as conn:
            if exc.permanent:
                outcome = "unknown" if maybe else "failed"
                batches.fail_open_rows(conn, batch_key, str(exc), outcome)
                batches.close_batch(conn, batch_key, outcome=outcome, error=str(exc), status=exc.status)
            else:
                batches.note_attempt(conn, ids, str(exc))
                # An answer saying "not sent" clears only this attempt's doubt, not an earlier one's.
                batches.release_batch(conn, batch_key, owner, exc.status, str(exc),
                                 maybe_sent=True if exc.maybe_sent else (None if doubted else False),
                                 retry_at=retry_at)
        log.error("batch %s (%d emails) not delivered%s: %s", batch_key, len(ids),
                  "" if exc.permanent else ", waiting for the operator to fix the key, domain or "
                  "sender" if exc.config else ", the sweep will retry", exc)
        return 0
    refused, waiting = {}, {}
    for i, reason in result.errors.items():
        (waiting if is_sender_error(reason) else refused)[ids[i]] = f"refused by Resend: {reason}"
    sent = [(nid, rid) for i, (nid, rid) in enumerate(zip(ids, result.ids)) if i not in result.errors]
    with db.transaction(services.pool) as conn:
        batches.mark_delivered(conn, [n for n, _ in sent], [r for _, r in sent])
        batches.mark_failed(conn, refused)
        if waiting:  # our sender refused: the operator's to fix, the emails wait for it
            reason = next(iter(waiting.values()))
            batches.note_attempt(conn, list(waiting), reason)
            batches.release_batch(conn, batch_key, owner, 422, reason, maybe_sent=False, retry_at=retry_at)
            log.error("batch %s: Resend refuses our sender for %d emails, kept for a retry: %s",
                      batch_key, len(waiting), reason)
        else:
            batches.close_batch(conn, batch_key, outcome="delivered" if sent else "failed", status=200,
                           error=f"{len(refused)} refused" if refused else None)
    for nid, reason in refused.items():
        log.error("batch %s: email %s refused, not retried: %s", batch_key, nid, reason)
    log.info("batch %s: %d emails delivered", batch_key, len(sent))
    return len(sent)


def sweep(services, grace_seconds: float = SWEEP_GRACE_SECONDS, now: datetime | None = None,
          force: bool = False) -> dict:
    """Deliver every open batch older than the grace period and due (its backoff over; `force`:
    due or not), drop expired payloads, and apply the retention (app.mail.retention).

    One sweep at a time across all hosts (a slow Resend must not let sweeps pile up on every
    worker); one failing batch is logged and the rest still go.
    """
    lock = services.redis.lock(services.keys.sweep_lock, timeout=SWEEP_LOCK_SECONDS,
                               blocking=False)
    if not lock.acquire():
        log.info("sweep skipped: another sweep is running")
        return {"batches": 0, "delivered": 0, "skipped": True}
    try:
        due_by = None if force else (now or datetime.now(timezone.utc))
        with db.transaction(services.pool) as conn:
            keys = batches.open_batch_keys(conn, grace_seconds, due_by=due_by)
            pruned = batches.prune_payloads(conn)
            kept = retention.sweep(conn, services.settings.audit_retention_days)
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
    if any(kept.values()):
        out["retention"] = kept
    return out
