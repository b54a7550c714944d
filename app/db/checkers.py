"""Who checks the watched sections: the evidence in the shared database, and the hand-over record.

The old Workers write nothing to this service's Redis; the one trace of their work is the site's
`class_states` row, which their check of a section upserts with `last_checked_at` (the site's
process-section route). This service writes that row too, and its own per-term record
(`seatwatch_section_states.scraped_at`) in the same transaction, so a `class_states` row checked
later than this service's own record of the section was checked by something else.

The site's own look-ups (adding a watch, fetching a class's details) write the row as well, but
they set `last_changed_at` together with `last_checked_at`; a check by the old Worker leaves
`last_changed_at` alone unless the seats or the instructor changed. So a row counts as checked
outside this service when it was written after this service's own record of it (by more than
OWN_WRITE_SLACK) and its change time is older than its check time (by more than LOOKUP_SLACK).
A second scheduler checks every section of its group each slot, most of them unchanged, so the
few rows a real change hides from this rule never hide the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# Our check writes class_states at its transaction's start and its own record with the scrape's
# time, milliseconds apart; anything later than this after our own record is another writer's.
OWN_WRITE_SLACK_SECONDS = 10
# The site's look-ups send last_changed_at and last_checked_at from one request, a moment apart.
LOOKUP_SLACK_SECONDS = 30
WINDOW_SECONDS = 3600  # "in the last hour": every group's slot comes once an hour

_OUTSIDE = f"""
    ((c.last_checked_at > coalesce(o.scraped_at, '-infinity') + interval '{OWN_WRITE_SLACK_SECONDS} seconds'
      and c.last_changed_at < c.last_checked_at - interval '{LOOKUP_SLACK_SECONDS} seconds')
     or o.checked_by <> %(me)s)"""

# After a hand-over, the old system's last run may still be draining its queue: its checks in
# this long after the record count as that run, not as a second scheduler.
HANDOVER_GRACE_SECONDS = 15 * 60

_OBSERVE = f"""
    select count(*) filter (where {_OUTSIDE} and c.last_checked_at > %(since)s) as outside,
           max(c.last_checked_at) filter (where {_OUTSIDE} and c.last_checked_at > %(since)s)
               as last_outside_at,
           max(c.last_checked_at) as last_any_at,
           statement_timestamp() as now,
           (select exists (select 1 from public.class_watches)) as watched
    from public.class_states c
    left join public.seatwatch_section_states o on o.term = c.term and o.class_nbr = c.class_nbr
    where c.last_checked_at > statement_timestamp() - interval '{WINDOW_SECONDS} seconds'"""


def sections_unchecked(conn, group: str, start: datetime,
                       end: datetime) -> tuple[list[tuple[str, str]], int]:
    """(the group's sections that nothing checked in [start, end), how many something did).

    A check by this service leaves its own record's scrape time; a check by anything else (the old
    Worker) leaves the site's class_states row's last_checked_at, for the term it stored. Either,
    inside the slot's hour, means the slot's check of that section is done (issue 25). A site row
    that looks like the site's own look-up (changed when checked: a user adding a watch) does not
    count, so a watch added just before a late run is still checked; an old check that found a
    change looks the same, and its section is checked once more: a scraper call, never an email."""
    rows = conn.execute(
        f"""select s.class_nbr, s.term,
                  exists (select 1 from public.class_states c
                          where c.class_nbr = s.class_nbr and c.term = s.term
                            and c.last_checked_at >= %(start)s and c.last_checked_at < %(end)s
                            and c.last_changed_at < c.last_checked_at - interval '{LOOKUP_SLACK_SECONDS} seconds')
                  or exists (select 1 from public.seatwatch_section_states o
                             where o.term = s.term and o.class_nbr = s.class_nbr
                               and o.scraped_at >= %(start)s and o.scraped_at < %(end)s) as checked
           from public.get_sections_to_check(%(group)s) s""",
        {"group": group, "start": start, "end": end}).fetchall()
    todo = [(r["term"], r["class_nbr"]) for r in rows if not r["checked"]]
    return todo, len(rows) - len(todo)


@dataclass(frozen=True)
class Observation:
    """What the database shows of the last hour's checks."""

    outside: int  # sections checked outside this service's runs
    last_outside_at: datetime | None
    last_any_at: datetime | None  # the latest check of any section by anyone (None: none this hour)
    now: datetime  # the database's clock
    watched: bool = True  # whether any section is watched at all


def outside_since(record) -> datetime | None:
    """Checks by something else count from here: the hand-over to this service plus its grace."""
    if record is None or record.owner != "vps":
        return None
    return record.at + timedelta(seconds=HANDOVER_GRACE_SECONDS)


def _params(since: datetime | None, me: str | None) -> dict:
    # me None: a check recorded by any deployment of this service counts as this service's
    return {"since": since or datetime.min.replace(tzinfo=timezone.utc), "me": me}


def observe(conn, since: datetime | None = None, me: str | None = None) -> Observation:
    """One query over the rows checked in the last hour (the index on last_checked_at); outside
    checks only after `since` (outside_since: the hand-over's grace) when given. `me`: this
    deployment's name (Settings.checker); a section whose last own record another deployment of
    this service wrote counts as outside too (a second VPS on the same database)."""
    row = conn.execute(_OBSERVE, _params(since, me)).fetchone()
    return Observation(row["outside"], row["last_outside_at"], row["last_any_at"], row["now"],
                       row["watched"])


def outside_sections(conn, since: datetime | None = None, me: str | None = None,
                     limit: int = 5) -> list[tuple[str, str, datetime]]:
    """A few (term, class_nbr, checked_at) of the sections checked outside, newest first (status)."""
    rows = conn.execute(
        f"""select c.term, c.class_nbr, c.last_checked_at
            from public.class_states c
            left join public.seatwatch_section_states o on o.term = c.term and o.class_nbr = c.class_nbr
            where c.last_checked_at > statement_timestamp() - interval '{WINDOW_SECONDS} seconds'
              and {_OUTSIDE} and c.last_checked_at > %(since)s
            order by c.last_checked_at desc limit %(limit)s""", {**_params(since, me), "limit": limit}).fetchall()
    return [(r["term"], r["class_nbr"], r["last_checked_at"]) for r in rows]


@dataclass(frozen=True)
class Handover:
    owner: str  # 'vps' (this service runs the schedule) or 'old' (handed back)
    at: datetime
    by_host: str
    note: str | None


def read_handover(conn) -> Handover | None:
    row = conn.execute("select owner, at, by_host, note from public.seatwatch_handover").fetchone()
    return Handover(row["owner"], row["at"], row["by_host"], row["note"]) if row else None


def write_handover(conn, owner: str, by_host: str, note: str | None = None) -> Handover:
    if owner not in ("vps", "old"):
        raise ValueError("owner must be vps or old")
    row = conn.execute(
        """insert into public.seatwatch_handover (owner, at, by_host, note) values (%s, now(), %s, %s)
           on conflict (singleton) do update
           set owner = excluded.owner, at = excluded.at, by_host = excluded.by_host, note = excluded.note
           returning owner, at, by_host, note""", (owner, by_host, note)).fetchone()
    return Handover(row["owner"], row["at"], row["by_host"], row["note"])


def clear_handover(conn) -> None:
    conn.execute("delete from public.seatwatch_handover")
