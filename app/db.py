"""PostgreSQL: the connection pool, the named queries this service runs, and migrations.

Prepared statements are off (`prepare_threshold=None`) so Supabase's transaction pooler works too.
"""

from __future__ import annotations

import logging
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


def make_pool(dsn: str, max_size: int = 6) -> ConnectionPool:
    """A small pool: 4 check workers, the sweep and a spare. Opens lazily on first use."""
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        kwargs={**CONNECT_KWARGS, "row_factory": dict_row},
        open=False,
        timeout=30,
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


def watchers_for_section(conn, class_nbr: str) -> list[Watcher]:
    rows = conn.execute(
        "select user_id, email, watch_id from public.get_watchers_for_sections(%s) order by watch_id",
        ([class_nbr],),
    ).fetchall()
    return [Watcher(str(r["user_id"]), r["email"], str(r["watch_id"])) for r in rows]


# --- class state ---------------------------------------------------------------------------------

STATE_COLUMNS = ("subject", "catalog_nbr", "title", "instructor_name", "seats_available",
                 "seats_capacity", "non_reserved_seats", "location", "meeting_times")


def get_state(conn, class_nbr: str, lock: bool = False) -> dict | None:
    sql = "select * from public.class_states where class_nbr = %s"
    return conn.execute(sql + (" for update" if lock else ""), (class_nbr,)).fetchone()


def upsert_state(conn, term: str, class_nbr: str, values: dict) -> None:
    cols = ", ".join(STATE_COLUMNS)
    params = ", ".join(f"%({c})s" for c in STATE_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS)
    conn.execute(
        f"""insert into public.class_states (term, class_nbr, {cols}, last_checked_at)
            values (%(term)s, %(class_nbr)s, {params}, now())
            on conflict (class_nbr) do update
            set term = excluded.term, {updates}, last_checked_at = now()""",
        {"term": term, "class_nbr": class_nbr, **{c: values.get(c) for c in STATE_COLUMNS}},
    )


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


def clear_seat_notifications(conn, class_nbr: str) -> int:
    """Seats filled: forget seat notifications so the next opening notifies again.

    Undelivered ones go too (their delivery rows cascade): an email about a seat that is no longer
    open would mislead the student.
    """
    cur = conn.execute(
        """delete from public.notifications_sent ns
           using public.class_watches cw
           where ns.class_watch_id = cw.id and cw.class_nbr = %s
             and ns.notification_type = 'seat_available'""",
        (class_nbr,),
    )
    return cur.rowcount


def add_deliveries(conn, batch_key: str, rows: Sequence[tuple[str, dict]]) -> None:
    """Store a batch: (notification id, email payload) in send order, one pipelined round trip."""
    with conn.cursor() as cur:
        cur.executemany(
            """insert into public.notification_deliveries (notification_id, batch_key, position, payload)
               values (%s, %s, %s, %s)""",
            [(nid, batch_key, position, Jsonb(payload)) for position, (nid, payload) in enumerate(rows)],
        )


def lock_undelivered_batch(conn, batch_key: str) -> list[dict]:
    """The batch's undelivered rows in order, locked; empty when another sender holds them."""
    return conn.execute(
        """select notification_id, payload, created_at from public.notification_deliveries
           where batch_key = %s and delivered_at is null and failed_at is null
           order by position for update skip locked""",
        (batch_key,),
    ).fetchall()


def undelivered_batch_keys(conn, older_than_seconds: float, limit: int = 50) -> list[str]:
    rows = conn.execute(
        """select batch_key from public.notification_deliveries
           where delivered_at is null and failed_at is null
             and created_at < now() - make_interval(secs => %s)
           group by batch_key order by min(created_at) limit %s""",
        (older_than_seconds, limit),
    ).fetchall()
    return [r["batch_key"] for r in rows]


def mark_delivered(conn, ids: Sequence[str], resend_ids: Sequence[str | None]) -> None:
    conn.execute(
        """update public.notification_deliveries d
           set delivered_at = now(), resend_id = sent.resend_id, attempts = d.attempts + 1,
               last_error = null
           from unnest(%s::uuid[], %s::text[]) as sent(notification_id, resend_id)
           where d.notification_id = sent.notification_id""",
        (list(ids), list(resend_ids)),
    )


def mark_attempt_failed(conn, ids: Sequence[str], error: str, permanent: bool) -> None:
    conn.execute(
        """update public.notification_deliveries
           set attempts = attempts + 1, last_error = %s,
               failed_at = case when %s then now() else failed_at end
           where notification_id = any(%s)""",
        (error[:500], permanent, list(ids)),
    )


def delivery_counts(conn, overdue_after_seconds: float = 900) -> dict:
    """Undelivered (`pending`; `overdue` when older than the given age) and given-up emails."""
    row = conn.execute(
        """select count(*) filter (where delivered_at is null and failed_at is null) as pending,
                  count(*) filter (where delivered_at is null and failed_at is null
                                   and created_at < now() - make_interval(secs => %s)) as overdue,
                  count(*) filter (where failed_at is not null) as failed
           from public.notification_deliveries""",
        (overdue_after_seconds,),
    ).fetchone()
    return {"pending": row["pending"], "overdue": row["overdue"], "failed": row["failed"]}


# --- migrations ----------------------------------------------------------------------------------

def _sql(name: str) -> str:
    return resources.files("app").joinpath("sql", name).read_text(encoding="utf-8")


def migration_names() -> list[str]:
    folder = resources.files("app").joinpath("sql", "migrations")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


def migrate(dsn: str, bootstrap: bool = False) -> list[str]:
    """Apply this service's migrations (and, with bootstrap, the Supabase-equivalent schema).

    Returns the names applied now. Safe to run concurrently and repeatedly.
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True, **CONNECT_KWARGS) as conn:
        conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            if bootstrap:
                with conn.transaction():
                    conn.execute(_sql("bootstrap.sql"))
            conn.execute(
                """create table if not exists public.seatwatch_migrations (
                       name text primary key, applied_at timestamptz not null default now())"""
            )
            done = {r[0] for r in conn.execute("select name from public.seatwatch_migrations")}
            for name in migration_names():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(_sql(f"migrations/{name}"))
                    conn.execute("insert into public.seatwatch_migrations (name) values (%s)", (name,))
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied
