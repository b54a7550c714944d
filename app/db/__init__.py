"""PostgreSQL: the connection pool and the transaction every query runs in.

The queries live by the part that runs them: app.db.watches (what to check, a section's state,
claiming notifications: the check), app.db.batches (delivery batches: mail's delivery), and
app.db.migrations (the schema, applied by `python -m app migrate`; its SQL is under app/db/sql/).

Prepared statements are off (`prepare_threshold=None`) so Supabase's transaction pooler works too.
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from contextlib import ExitStack, contextmanager
from typing import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

CONNECT_KWARGS = {"prepare_threshold": None, "connect_timeout": 10, "application_name": "seatwatch"}

# A connection back in the pool longer than this gets psycopg_pool's round-trip check when it
# leaves again; a fresher one is checked by looking at its socket (check_connection).
ROUND_TRIP_CHECK_AFTER_IDLE_SECONDS = 30.0

_returned_at: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = weakref.WeakKeyDictionary()
_asking = threading.local()  # .quick: this thread's getconn may take the quick check


def _socket_readable(conn: psycopg.Connection) -> bool:
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def check_connection(conn: psycopg.Connection) -> None:
    """Check a connection leaving the pool; raise if it is unusable (the pool then discards it).

    For a transaction that asks for it (the section check, thousands an hour) the check is quick
    when it can be: an idle session has nothing to say, the server speaks only to answer, except
    when it ends the session (a restart, pg_terminate_backend, a pooler recycling its clients),
    when it sends its FATAL and closes the socket. So a connection used moments ago whose socket
    has nothing to read is as the server left it and needs no round trip: that round trip was one
    of the five or six every check paid (issue 20: ~0.8 ms each under four workers here; a
    network round trip to a hosted database, bench/db_round_trips.py). The one case it misses: a
    session ended within the last instant, its FATAL not yet arrived; that check then fails and
    is retried like any other failed check (app.tasks). A readable socket, a broken connection,
    one idle longer than ROUND_TRIP_CHECK_AFTER_IDLE_SECONDS (a path that died silently shows only
    to a round trip), and every other transaction (health, the sweep, cron runs: few, and some not
    retried) get psycopg_pool's own round-trip check.
    """
    if getattr(_asking, "quick", False):
        returned = _returned_at.get(conn)
        idle = None if returned is None else time.monotonic() - returned
        fresh = idle is not None and idle < ROUND_TRIP_CHECK_AFTER_IDLE_SECONDS
        if fresh and not conn.broken and not _socket_readable(conn):
            return
    ConnectionPool.check_connection(conn)


def make_pool(dsn: str, max_size: int = 6, timeout: float = 30) -> ConnectionPool:
    """A small pool: 4 check workers, the sweep and a spare. Opens lazily on first use.

    Each connection is checked when it leaves the pool (check_connection), so the first use after
    a database or pooler restart gets a fresh connection instead of an error.
    """
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        kwargs={**CONNECT_KWARGS, "row_factory": dict_row},
        open=False,
        timeout=timeout,
        check=check_connection,
        name="seatwatch",
    )


@contextmanager
def transaction(pool: ConnectionPool, quick_check: bool = False) -> Iterator[psycopg.Connection]:
    """One connection in one transaction: committed on success, rolled back on error.

    quick_check: the connection may leave the pool on check_connection's quick check (no round
    trip for one used in the last 30 s whose socket is quiet); for work that a failure in the
    instant after a database restart only delays, as it is retried (the section check).

    Not psycopg's pipeline mode: it was meant to send BEGIN with the first statement and the
    last with COMMIT, but a transaction of a read then a write took five round trips in it
    against four without (bench/_latencyproxy.py at 2 ms, 2026-12-01: 13.4 vs 10.9 ms), and
    more CPU.
    """
    if pool.closed:
        pool.open()
    with ExitStack() as held:
        _asking.quick = quick_check  # read by check_connection, which getconn runs on this thread
        try:
            conn = held.enter_context(pool.connection())
        finally:
            _asking.quick = False
        try:
            with conn.transaction():
                yield conn
        finally:
            # when it goes back (not the pool's `reset` callback: that returns it on a thread of
            # the pool's, a hand-off on every check)
            _returned_at[conn] = time.monotonic()
