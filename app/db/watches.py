"""The check's queries about watched sections: which sections a cron group checks, who watches a section,
the section's stored state (this service's and the site's class_states row), and claiming notifications."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

# --- reading what to check -------------------------------------------------------------------

def sections_to_check(conn, group: str) -> list[tuple[str, str]]:
    """(term, class_nbr) of every watched section in the group ('even', 'odd' or 'all')."""
    rows = conn.execute("select class_nbr, term from public.get_sections_to_check(%s)", (group,))
    return [(r["term"], r["class_nbr"]) for r in rows.fetchall()]


@dataclass(frozen=True)
class Watcher:
    user_id: str
    email: str
    watch_id: str


def watchers_for_section(conn, term: str, class_nbr: str) -> list[Watcher]:
    """Eligible watchers of one section of one term.

    Eligibility stays the site's own function; it selects by class number only (it predates
    overlapping terms), so the watches are narrowed to the term here.
    """
    rows = conn.execute(
        """select w.user_id, w.email, w.watch_id
           from public.get_watchers_for_sections(%s) w
           join public.class_watches cw on cw.id = w.watch_id
           where cw.term = %s
           order by w.watch_id""",
        ([class_nbr], term),
    ).fetchall()
    return [Watcher(str(r["user_id"]), r["email"], str(r["watch_id"])) for r in rows]


# --- section state -------------------------------------------------------------------------------

STATE_COLUMNS = ("subject", "catalog_nbr", "title", "instructor_name", "seats_available",
                 "seats_capacity", "non_reserved_seats", "location", "meeting_times")


_SITE_COLUMNS = ("term",) + STATE_COLUMNS
_LOCK_STATE = """
    with locked as (
        select * from public.seatwatch_section_states
        where term = %(term)s and class_nbr = %(class_nbr)s for update)
    select statement_timestamp() - make_interval(secs => %(ago)s) as scrape_clock, locked.*,
           {site}
    from (values (1)) as one (x)
    left join locked on true
    left join public.class_states site on locked.term is null and site.class_nbr = %(class_nbr)s
    """.format(site=", ".join(f"site.{c} as site_{c}" for c in _SITE_COLUMNS))


def lock_section_state(conn, term: str, class_nbr: str,
                       scraped: float | None = None) -> tuple[dict | None, dict | None, datetime]:
    """(own, site, scraped_at): this service's state of one section of one term, locked until
    the transaction ends; when there is none, the site's class_states row of the class number
    (whatever its term: its state columns and term); and when the scrape
    happened on the database's clock: the statement's start less the time since `scraped` (the
    scrape's end on this process's monotonic clock; None: now). One clock for every worker host,
    so a host whose own clock is fast cannot make another host's newer scrape look older; the
    statement's start, not the clock after the row lock, so a check that waited for another's
    lock keeps its own, earlier time. One round trip for all three."""
    ago = 0.0 if scraped is None else max(0.0, time.monotonic() - scraped)
    row = conn.execute(_LOCK_STATE, {"term": term, "class_nbr": class_nbr, "ago": ago}).fetchone()
    scraped_at = row.pop("scrape_clock")
    site = {c: row.pop(f"site_{c}") for c in _SITE_COLUMNS}
    own = row if row["term"] is not None else None
    return own, (site if site["term"] is not None else None), scraped_at


_SAVE_SECTION_STATE = """
    insert into public.seatwatch_section_states as s
        (term, class_nbr, instructor_name, seats_available, seats_capacity,
         non_reserved_seats, scraped_at, changed_at,
         subject, catalog_nbr, title, location, meeting_times, checked_by)
    values (%(term)s, %(class_nbr)s, %(instructor_name)s, %(seats_available)s,
            %(seats_capacity)s, %(non_reserved_seats)s, %(scraped_at)s, now(),
            %(subject)s, %(catalog_nbr)s, %(title)s, %(location)s, %(meeting_times)s, %(checked_by)s)
    on conflict (term, class_nbr) do update
    set instructor_name = excluded.instructor_name,
        subject = excluded.subject, catalog_nbr = excluded.catalog_nbr, title = excluded.title,
        location = excluded.location, meeting_times = excluded.meeting_times,
        seats_available = excluded.seats_available,
        seats_capacity = excluded.seats_capacity,
        non_reserved_seats = excluded.non_reserved_seats,
        scraped_at = excluded.scraped_at,
        checked_by = excluded.checked_by,
        changed_at = case
            when (s.seats_available, s.non_reserved_seats, s.instructor_name)
                 is distinct from
                 (excluded.seats_available, excluded.non_reserved_seats, excluded.instructor_name)
            then now() else s.changed_at end
    where s.scraped_at < excluded.scraped_at"""

_UPSERT_STATE = """
    insert into public.class_states (term, class_nbr, {cols}, last_checked_at)
    values (%(term)s, %(class_nbr)s, {params}, now())
    on conflict (class_nbr) do update
    set term = excluded.term, {updates}, last_checked_at = now()""".format(
    cols=", ".join(STATE_COLUMNS),
    params=", ".join(f"%({c})s" for c in STATE_COLUMNS),
    updates=", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS),
)


def _state_params(term: str, class_nbr: str, values: dict, scraped_at=None, checked_by=None) -> dict:
    return {"term": term, "class_nbr": class_nbr, "scraped_at": scraped_at, "checked_by": checked_by,
            **{c: values.get(c) for c in STATE_COLUMNS}}


def save_states(conn, term: str, class_nbr: str, values: dict, scraped_at, checked_by: str | None = None) -> None:
    """This service's state of the section, unless a newer scrape is stored, and the site's
    class_states row (its dashboard reads it, as the old worker wrote it): one statement, one
    round trip instead of two on every check (bench/check_cost.py)."""
    conn.execute(f"with saved as ({_SAVE_SECTION_STATE} returning 1) {_UPSERT_STATE}",
                 _state_params(term, class_nbr, values, scraped_at, checked_by))


# --- notifications -----------------------------------------------------------------------------

def claim_notifications(conn, watch_ids: Sequence[str], kind: str) -> list[str | None]:
    """Per watch, the new notification's id, or None where a live one already exists.

    One statement over the array of watches, one round trip for the lot. (psycopg's executemany
    pipelines the per-watch statements into one round trip too, but spins on the socket while the
    server works through them: a notifying check of 100 watchers took ~105 ms without the scraper
    that way, ~70 ms this way, bench/check_cost.py, issue 20.)
    """
    if not watch_ids:
        return []
    rows = conn.execute(
        """select public.claim_notification(w.id, %s) as id
           from unnest(%s::uuid[]) with ordinality as w (id, n)
           order by w.n""",
        (kind, list(watch_ids)),
    ).fetchall()
    return [str(r["id"]) if r["id"] else None for r in rows]


def clear_seat_notifications(conn, term: str, class_nbr: str) -> int:
    """Seats filled: forget the section's seat notifications so the next opening notifies again.

    Ones not yet attempted go too (their delivery rows cascade): an email about a seat that is no
    longer open would mislead the student. A batch already attempted is resent as attempted (its
    payload is frozen on delivery_batches), so Resend's idempotency still holds.
    """
    cur = conn.execute(
        """delete from public.notifications_sent ns
           using public.class_watches cw
           where ns.class_watch_id = cw.id and cw.class_nbr = %s and cw.term = %s
             and ns.notification_type = 'seat_available'""",
        (class_nbr, term),
    )
    return cur.rowcount
