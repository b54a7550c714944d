"""Migrations: the Supabase-equivalent schema (bootstrap.sql, for tests and a fresh database) and
this service's own numbered migrations under app/db/sql/migrations/, applied once each, in order."""

from __future__ import annotations

import logging
import time
from importlib import resources

import psycopg

from app.db import CONNECT_KWARGS

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_231_004  # pg_advisory_lock id: one migrator at a time

def _sql(name: str) -> str:
    return resources.files("app.db").joinpath("sql", name).read_text(encoding="utf-8")


def migration_names() -> list[str]:
    folder = resources.files("app.db").joinpath("sql", "migrations")
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
