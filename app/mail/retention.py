"""Retention: this service keeps students' data no longer than the site's privacy page promises.

The site (app/legal/privacy/page.tsx) promises that a deleted account's data is permanently deleted
within 30 days and that notification records are removed after one year. This service's own tables
hold delivery audit rows (recipient address, the user, type, times, Resend's id) and, while a batch
is open, email payloads (address and an unsubscribe token naming the user):

- An account deleted: at once, by the database (migration 0006): the audit row's user id is set
  null by its foreign key and a trigger drops the address and payload with it. Rows written before
  this service kept user ids are scrubbed here, at the next sweep, when no account has that address.
- Audit rows older than SEATWATCH_AUDIT_RETENTION_DAYS (365) are deleted, with their closed batches.
- Payloads go once a batch is closed, or after 24 h (app.db.prune_payloads).

Runs inside every delivery sweep (every 5 minutes): each statement reads an index, never the table.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def sweep(conn, audit_retention_days: int) -> dict:
    """Scrub what deleted accounts left and delete what is past the retention; the row counts."""
    scrubbed = 0
    # Rows with an address but no user are rare (written before 0006): look first, by their partial
    # index, so a sweep with none does not read auth.users at all.
    unowned = [r["id"] for r in conn.execute(
        """select id from public.notification_deliveries
           where user_id is null and recipient is not null limit 1000""").fetchall()]
    if unowned:
        scrubbed = conn.execute(
            """update public.notification_deliveries d
               set recipient = null, payload = null,
                   last_error = replace(d.last_error, d.recipient, '<deleted account>')
               where d.id = any(%s::uuid[])
                 and not exists (select 1 from auth.users u where lower(u.email) = lower(d.recipient))""",
            (unowned,),
        ).rowcount
    deleted = conn.execute(
        """delete from public.notification_deliveries
           where created_at < now() - make_interval(days => %s)""",
        (audit_retention_days,),
    ).rowcount
    # A batch row holds no address once closed; it goes with its emails' audit rows.
    batches = conn.execute(
        """delete from public.delivery_batches
           where created_at < now() - make_interval(days => %s)
             and (delivered_at is not null or failed_at is not null)""",
        (audit_retention_days,),
    ).rowcount
    if scrubbed or deleted or batches:
        log.info("retention: %d audit rows of deleted accounts scrubbed, %d audit rows and %d batches "
                 "past %d days deleted", scrubbed, deleted, batches, audit_retention_days)
    return {"scrubbed": scrubbed, "deleted": deleted, "batches_deleted": batches}
