"""PostgreSQL: the connection pool and the transaction every query runs in.

The queries live by the part that runs them: app.db.watches (what to check, a section's state,
claiming notifications: the check), app.db.batches (delivery batches: mail's delivery), and
app.db.migrations (the schema, applied by `python -m app migrate`; its SQL is under app/db/sql/).

Prepared statements are off (`prepare_threshold=None`) so Supabase's transaction pooler works too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

CONNECT_KWARGS = {"prepare_threshold": None, "connect_timeout": 10, "application_name": "seatwatch"}


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
