"""Re-checking a batch before it is retried: its emails as they would be written now.

A batch Resend never accepted (every attempt answered "not sent", or never connected) can be sent
as things are now instead of as they were: after an outage spanning open -> fill -> reopen, the
student gets the current figure once, not "2 seats" from an hour ago and then "3 seats". An email
whose claim is gone (seats filled, watch deleted), whose watcher is no longer eligible, or whose
news is no longer true is cancelled; the rest are rendered again from this service's state of the
section and the current settings (a sender fixed by the operator goes out fixed).

A batch Resend may have accepted (an earlier attempt went unanswered) is re-checked too but keeps
its key (issue 26, app.mail.delivery): an email no longer true is cancelled, one that changed goes
rebuilt under the same key, and Resend either sends it (it never took the first bytes) or answers
409 invalid_idempotent_request (it did: delivered then). "Still true" is judged on the seat count
detection used: this service's stored state, the non-reserved count carried as app.check.changes
keeps it.
"""

from __future__ import annotations

from app.db import batches, watches
from app.mail.build import build_email
from app.section import Change, SectionInfo, is_unnamed


def possible(batch: dict) -> bool:
    """Batches made before migration 0006 do not say which section they are about."""
    return bool(batch.get("term") and batch.get("class_nbr") and batch.get("notification_type"))


def _section(conn, term: str, class_nbr: str) -> SectionInfo | None:
    state = conn.execute(
        """select * from public.seatwatch_section_states where term = %s and class_nbr = %s""",
        (term, class_nbr),
    ).fetchone()
    if state is None or state["subject"] is None:
        return None  # a state stored before 0006: not enough to write an email from
    return SectionInfo(state["subject"], state["catalog_nbr"] or "", state["title"] or "",
                       state["instructor_name"] or "", state["seats_available"],
                       state["seats_capacity"], state["non_reserved_seats"],
                       state["location"] or "", state["meeting_times"] or "")


def no_longer_true(kind: Change, info: SectionInfo) -> str | None:
    if kind is Change.SEAT_AVAILABLE and info.open_seats <= 0:
        return "cancelled: the seats filled before Resend accepted the email"
    if kind is Change.INSTRUCTOR_ASSIGNED and is_unnamed(info.instructor):
        return "cancelled: no instructor is named any more"
    return None


def rebuild(conn, services, batch: dict) -> tuple[list[str], list[dict]]:
    """(delivery row ids, emails) to send now; the rows not sent are cancelled with the reason."""
    rows = conn.execute(
        """select d.id, d.payload, ns.class_watch_id as watch_id
           from public.notification_deliveries d
           left join public.notifications_sent ns on ns.id = d.notification_id
           where d.batch_key = %s and d.delivered_at is null and d.failed_at is null
             and d.cancelled_at is null
           order by d.position""",
        (batch["batch_key"],),
    ).fetchall()
    term, class_nbr = batch["term"], batch["class_nbr"]
    kind = Change(batch["notification_type"])
    info = _section(conn, term, class_nbr)
    stale = no_longer_true(kind, info) if info else None
    watchers = {w.watch_id: w for w in watches.watchers_for_section(conn, term, class_nbr)}
    settings = services.settings
    cancelled: dict[str, str] = {}
    ids: list[str] = []
    emails: list[dict] = []
    for row in rows:
        rid, watch_id = str(row["id"]), row["watch_id"] and str(row["watch_id"])
        watcher = watchers.get(watch_id) if watch_id else None
        if watch_id is None:
            cancelled[rid] = "cancelled: its claim was cleared (seats filled, or the watch deleted)"
        elif stale:
            cancelled[rid] = stale
        elif watcher is None:
            cancelled[rid] = "cancelled: the watcher is no longer eligible (notifications off, bounced, disabled)"
        elif info is None:  # no state to write from: the email as claimed, if it is still there
            if row["payload"] is None:
                cancelled[rid] = "cancelled: nothing left to send it from"
            else:
                ids.append(rid)
                emails.append(row["payload"])
        else:
            ids.append(rid)
            emails.append(build_email(
                kind, to=watcher.email, user_id=watcher.user_id, term=term, class_nbr=class_nbr,
                info=info, site_url=settings.site_url, sender=settings.notification_from_email,
                unsubscribe_secret=settings.unsubscribe_secret))
    if batch.get("maybe_sent_at") is not None:
        cancelled = {rid: f"{why} (an earlier attempt, which Resend may have accepted, was true then)"
                     for rid, why in cancelled.items()}
    batches.cancel_rows(conn, cancelled)
    # The audit row names the address the email goes to now (a student may have changed it).
    conn.execute(
        """update public.notification_deliveries d set recipient = r.recipient
           from unnest(%s::uuid[], %s::text[]) as r(id, recipient)
           where d.id = r.id and d.recipient is distinct from r.recipient""",
        (ids, [e["to"][0] for e in emails]),
    )
    return ids, emails
