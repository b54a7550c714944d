"""Exactly-once delivery of claimed notifications.

A check claims notifications and stores each email's exact payload in a batch (one transaction).
Then a batch is sent while its rows are locked (`FOR UPDATE SKIP LOCKED`: the check's own send and
the sweep never send one batch at the same time), with the batch key as Resend's Idempotency-Key,
and marked delivered in the same transaction. If the answer is lost or the worker dies, the rows
stay undelivered and the sweep sends the same payload under the same key: Resend replays its first
answer instead of sending again. Resend remembers a key for 24 hours, so a batch still undelivered
after 23 hours is given up (recorded with the reason) rather than risk a duplicate.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from app import db
from app.mailer import SendFailed

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=23)
SWEEP_GRACE_SECONDS = 60  # leave fresh batches to the check that created them


def deliver_batch(services, batch_key: str) -> int:
    """Send one batch if it is still undelivered; the number of emails delivered now."""
    with db.transaction(services.pool) as conn:
        rows = db.lock_undelivered_batch(conn, batch_key)
        if not rows:
            return 0  # delivered already, cancelled, or another sender holds it right now
        ids = [str(r["notification_id"]) for r in rows]
        oldest = min(r["created_at"] for r in rows)
        if datetime.now(timezone.utc) - oldest > IDEMPOTENCY_WINDOW:
            db.mark_attempt_failed(conn, ids, "undelivered past Resend's idempotency window; "
                                   "not resent to avoid a duplicate", permanent=True)
            log.error("batch %s given up: past the idempotency window", batch_key)
            return 0
        try:
            resend_ids = services.mailer.send_batch([r["payload"] for r in rows], batch_key)
        except SendFailed as exc:
            db.mark_attempt_failed(conn, ids, str(exc), permanent=exc.permanent)
            log.error("batch %s (%d emails) not delivered%s: %s", batch_key, len(ids),
                      "" if exc.permanent else ", the sweep will retry", exc)
            return 0
        db.mark_delivered(conn, ids, resend_ids)
    log.info("batch %s delivered: %d emails", batch_key, len(ids))
    return len(ids)


def sweep(services, grace_seconds: float = SWEEP_GRACE_SECONDS) -> dict:
    """Deliver every claimed-but-undelivered batch older than the grace period."""
    with db.transaction(services.pool) as conn:
        keys = db.undelivered_batch_keys(conn, grace_seconds)
    delivered = sum(deliver_batch(services, key) for key in keys)
    if keys:
        log.info("sweep: %d batches looked at, %d emails delivered", len(keys), delivered)
    return {"batches": len(keys), "delivered": delivered}
