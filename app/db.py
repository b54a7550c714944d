"""PostgreSQL: the connection pool, the named queries this service runs, and migrations.

Prepared statements are off (`prepare_threshold=None`) so Supabase's transaction pooler works too.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

CONNECT_KWARGS = {"prepare_threshold": None, "connect_timeout": 10, "application_name": "seatwatch"}
MIGRATION_LOCK = 7_231_004  # pg_advisory_lock id: one migrator at a time


def make_pool(dsn: str, max_size: int = 6, timeout: float = 30) -> ConnectionPool:
    """A small pool: 4 check workers, the sweep and a spare. Opens lazily on first use.

    Each connection is checked (a cheap round trip) when it leaves the pool, so the first use
    after a database or pooler restart gets a fresh connection instead of an error.
    """
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        kwargs={**CONNECT_KWARGS, "row_factory": dict_row},
        open=False,
        timeout=timeout,
        check=ConnectionPool.check_connection,
        name="seatwatch",
    )


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """One connection in one transaction: committed on success, rolled back on error."""
    if pool.closed:
        pool.open()
    with pool.connection() as conn:
        with conn.transaction():
            yield conn


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


def lock_section_state(conn, term: str, class_nbr: str) -> dict | None:
    """This service's state of one section of one term, locked until the transaction ends."""
    return conn.execute(
        """select * from public.seatwatch_section_states
           where term = %s and class_nbr = %s for update""",
        (term, class_nbr),
    ).fetchone()


_SAVE_SECTION_STATE = """
    insert into public.seatwatch_section_states as s
        (term, class_nbr, instructor_name, seats_available, seats_capacity,
         non_reserved_seats, scraped_at, changed_at)
    values (%(term)s, %(class_nbr)s, %(instructor_name)s, %(seats_available)s,
            %(seats_capacity)s, %(non_reserved_seats)s, %(scraped_at)s, now())
    on conflict (term, class_nbr) do update
    set instructor_name = excluded.instructor_name,
        seats_available = excluded.seats_available,
        seats_capacity = excluded.seats_capacity,
        non_reserved_seats = excluded.non_reserved_seats,
        scraped_at = excluded.scraped_at,
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


def _state_params(term: str, class_nbr: str, values: dict, scraped_at=None) -> dict:
    return {"term": term, "class_nbr": class_nbr, "scraped_at": scraped_at,
            **{c: values.get(c) for c in STATE_COLUMNS}}


def get_state(conn, class_nbr: str) -> dict | None:
    """The site's class_states row (one per class number, whatever the term)."""
    return conn.execute("select * from public.class_states where class_nbr = %s",
                        (class_nbr,)).fetchone()


def save_states(conn, term: str, class_nbr: str, values: dict, scraped_at) -> None:
    """This service's state of the section, unless a newer scrape is stored, and the site's
    class_states row (its dashboard reads it, as the old worker wrote it): one statement, one
    round trip instead of two on every check (bench/check_cost.py)."""
    conn.execute(f"with saved as ({_SAVE_SECTION_STATE} returning 1) {_UPSERT_STATE}",
                 _state_params(term, class_nbr, values, scraped_at))


# --- notifications -----------------------------------------------------------------------------

def claim_notifications(conn, watch_ids: Sequence[str], kind: str) -> list[str | None]:
    """Per watch, the new notification's id, or None where a live one already exists.

    One pipelined round trip for the lot (executemany), not one per watcher.
    """
    if not watch_ids:
        return []
    with conn.cursor() as cur:
        cur.executemany("select public.claim_notification(%s, %s) as id",
                        [(w, kind) for w in watch_ids], returning=True)
        ids = []
        while True:
            row = cur.fetchone()
            ids.append(str(row["id"]) if row and row["id"] else None)
            if not cur.nextset():
                return ids


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


def add_batch(conn, batch_key: str, kind: str, rows: Sequence[tuple[str, dict]]) -> None:
    """Store a batch: its row, and (notification id, email payload) in send order."""
    conn.execute("insert into public.delivery_batches (batch_key) values (%s)", (batch_key,))
    with conn.cursor() as cur:
        cur.executemany(
            """insert into public.notification_deliveries
                   (notification_id, batch_key, position, payload, recipient, notification_type)
               values (%s, %s, %s, %s, %s, %s)""",
            [(nid, batch_key, position, Jsonb(payload), (payload.get("to") or [None])[0], kind)
             for position, (nid, payload) in enumerate(rows)],
        )


def lease_batch(conn, batch_key: str, owner: str, lease_seconds: float) -> dict | None:
    """Take the batch's lease if it is open and nobody holds a live lease; None otherwise.

    One row is the unit: of two senders racing, the second waits for the first's row lock, then
    re-reads the row and finds the lease taken (READ COMMITTED re-checks the WHERE clause).
    """
    return conn.execute(
        """update public.delivery_batches
           set lease_owner = %s, lease_until = now() + make_interval(secs => %s),
               attempts = attempts + 1, last_attempt_at = now(),
               first_attempt_at = coalesce(first_attempt_at, now())
           where batch_key = %s and delivered_at is null and failed_at is null
             and (lease_until is null or lease_until < now())
           returning batch_key, created_at, attempts, payload, delivery_ids""",
        (owner, lease_seconds, batch_key),
    ).fetchone()


def freeze_batch(conn, batch_key: str) -> tuple[list[str], list[dict]]:
    """Fix a batch's payload at its first attempt: (delivery row ids, emails) in send order.

    Rows whose claim is gone (seats filled again, watch deleted) are cancelled, never sent."""
    conn.execute(
        """update public.notification_deliveries set cancelled_at = now(), payload = null
           where batch_key = %s and notification_id is null and delivered_at is null
             and failed_at is null and cancelled_at is null""",
        (batch_key,),
    )
    # Gathered and stored by the server in one statement: the emails cross the wire once, and are
    # not decoded and re-encoded here on the way (a third of a 100-watcher check's CPU, issue 20).
    row = conn.execute(
        """update public.delivery_batches b set payload = live.emails, delivery_ids = live.ids
           from (select jsonb_agg(payload order by position) as emails,
                        array_agg(id order by position) as ids
                 from public.notification_deliveries
                 where batch_key = %s and delivered_at is null and failed_at is null
                   and cancelled_at is null and payload is not null) live
           where b.batch_key = %s and live.ids is not null
           returning live.ids, live.emails""",
        (batch_key, batch_key),
    ).fetchone()
    if row is None:
        return [], []
    return [str(i) for i in row["ids"]], row["emails"]


def close_batch(conn, batch_key: str, *, delivered: bool, error: str | None = None,
                status: int | None = None) -> None:
    """A batch is done: delivered (its answer recorded) or given up. Its payload is dropped."""
    conn.execute(
        f"""update public.delivery_batches
            set {"delivered_at" if delivered else "failed_at"} = now(), lease_owner = null,
                lease_until = null, payload = null, last_status = %s, last_error = %s
            where batch_key = %s""",
        (status, None if error is None else error[:500], batch_key),
    )


def release_batch(conn, batch_key: str, owner: str, status: int | None, error: str) -> None:
    """An attempt failed for now: drop the lease (if still ours) and say why; the sweep retries."""
    conn.execute(
        """update public.delivery_batches
           set lease_owner = null, lease_until = null, last_status = %s, last_error = %s
           where batch_key = %s and lease_owner = %s""",
        (status, error[:500], batch_key, owner),
    )


def mark_delivered(conn, ids: Sequence[str], resend_ids: Sequence[str | None]) -> None:
    """Delivery rows (by id) accepted by Resend, with its ids."""
    if not ids:
        return
    conn.execute(
        """update public.notification_deliveries d
           set delivered_at = now(), resend_id = sent.resend_id, attempts = d.attempts + 1,
               last_error = null, payload = null
           from unnest(%s::uuid[], %s::text[]) as sent(id, resend_id)
           where d.id = sent.id""",
        (list(ids), list(resend_ids)),
    )


def mark_failed(conn, failures: dict[str, str]) -> None:
    """Emails given up for good, each with its own reason (an invalid address, say)."""
    if not failures:
        return
    conn.execute(
        """update public.notification_deliveries d
           set failed_at = now(), attempts = d.attempts + 1, last_error = f.reason, payload = null
           from unnest(%s::uuid[], %s::text[]) as f(id, reason)
           where d.id = f.id""",
        (list(failures), [r[:500] for r in failures.values()]),
    )


def fail_open_rows(conn, batch_key: str, reason: str) -> None:
    """Give up every email of a batch still waiting (attempted or not), with the reason."""
    conn.execute(
        """update public.notification_deliveries
           set failed_at = now(), last_error = %s, payload = null
           where batch_key = %s and delivered_at is null and failed_at is null
             and cancelled_at is null""",
        (reason[:500], batch_key),
    )


def note_attempt(conn, ids: Sequence[str], error: str) -> None:
    """A failed attempt that will be retried, recorded on each email's audit row."""
    conn.execute(
        """update public.notification_deliveries
           set attempts = attempts + 1, last_error = %s
           where id = any(%s::uuid[])""",
        (error[:500], list(ids)),
    )


def open_batch_keys(conn, older_than_seconds: float, limit: int = 50) -> list[str]:
    """Open batches nobody is sending, oldest first, leaving fresh ones to their check."""
    rows = conn.execute(
        """select batch_key from public.delivery_batches
           where delivered_at is null and failed_at is null
             and (lease_until is null or lease_until < now())
             and created_at < now() - make_interval(secs => %s)
           order by created_at limit %s""",
        (older_than_seconds, limit),
    ).fetchall()
    return [r["batch_key"] for r in rows]


def prune_payloads(conn, keep_hours: int = 24) -> int:
    """Drop email payloads past Resend's idempotency window (they can no longer be resent);
    the audit row (recipient, type, times, Resend id, error) stays."""
    cur = conn.execute(
        """update public.notification_deliveries set payload = null
           where payload is not null and created_at < now() - make_interval(hours => %s)""",
        (keep_hours,),
    )
    conn.execute(
        """update public.delivery_batches set payload = null
           where payload is not null and created_at < now() - make_interval(hours => %s)""",
        (keep_hours,),
    )
    return cur.rowcount


def delivery_counts(conn, overdue_after_seconds: float = 900) -> dict:
    """Emails waiting (`pending`; `overdue` past the given age), given up in the last 24 h
    (`failed`), and the newest reason Resend refused our credentials (401/403), if any batch is
    waiting on that. Each figure reads a partial index, never the whole audit table."""
    row = conn.execute(
        """select
             (select count(*) from public.notification_deliveries
              where delivered_at is null and failed_at is null and notification_id is not null
             ) as pending,
             (select count(*) from public.notification_deliveries
              where delivered_at is null and failed_at is null and notification_id is not null
                and created_at < now() - make_interval(secs => %s)) as overdue,
             (select count(*) from public.notification_deliveries
              where failed_at > now() - interval '24 hours') as failed""",
        (overdue_after_seconds,),
    ).fetchone()
    refused = conn.execute(
        """select last_status, last_error from public.delivery_batches
           where delivered_at is null and failed_at is null and last_status in (401, 403)
           order by last_attempt_at desc limit 1""",
    ).fetchone()
    out = {"pending": row["pending"], "overdue": row["overdue"], "failed": row["failed"]}
    if refused:
        out["refused"] = {"status": refused["last_status"], "error": refused["last_error"]}
    return out


# --- migrations ----------------------------------------------------------------------------------

def _sql(name: str) -> str:
    return resources.files("app").joinpath("sql", name).read_text(encoding="utf-8")


def migration_names() -> list[str]:
    folder = resources.files("app").joinpath("sql", "migrations")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


class MigrationLockTimeout(RuntimeError):
    """Another migrator held the migration lock for longer than we wait."""


def _take_migration_lock(conn, wait_seconds: float) -> None:
    """A transaction-scoped advisory lock: released at commit on the same server connection, so
    it works through a transaction-mode pooler (a session lock and its unlock could land on two
    different server connections there and stay held forever)."""
    deadline = time.monotonic() + wait_seconds
    while not conn.execute("select pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise MigrationLockTimeout(
                f"another migration has held the migration lock ({MIGRATION_LOCK}) for over "
                f"{wait_seconds:.0f} s; is a deploy still running? (pg_locks, objid {MIGRATION_LOCK})")
        time.sleep(0.2)


def migrate(dsn: str, bootstrap: bool = False, lock_wait_seconds: float = 60) -> list[str]:
    """Apply this service's migrations (and, with bootstrap, the Supabase-equivalent schema).

    Returns the names applied now. Safe to run concurrently and repeatedly, directly or through a
    transaction-mode pooler: each step is one transaction holding a transaction-scoped lock.
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True, **CONNECT_KWARGS) as conn:
        with conn.transaction():
            _take_migration_lock(conn, lock_wait_seconds)
            if bootstrap:
                conn.execute(_sql("bootstrap.sql"))
            conn.execute(
                """create table if not exists public.seatwatch_migrations (
                       name text primary key, applied_at timestamptz not null default now())"""
            )
        for name in migration_names():
            with conn.transaction():
                _take_migration_lock(conn, lock_wait_seconds)
                done = conn.execute("select 1 from public.seatwatch_migrations where name = %s",
                                    (name,)).fetchone()
                if done:
                    continue
                conn.execute(_sql(f"migrations/{name}"))
                conn.execute("insert into public.seatwatch_migrations (name) values (%s)", (name,))
            log.info("applied migration %s", name)
            applied.append(name)
    return applied
