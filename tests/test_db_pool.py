"""The pool's check of a connection leaving it (app.db.check_connection): for a transaction that
asks for the quick check (the section check) no round trip for one used moments ago whose socket
is quiet, psycopg_pool's round trip otherwise and for every other transaction; a connection the
server ended is never handed out."""

from __future__ import annotations

import time

import pytest
from psycopg_pool import ConnectionPool

from app import db


@pytest.fixture
def round_trips(monkeypatch):
    """The connections psycopg_pool's own (round-trip) check was run on."""
    seen = []
    real = ConnectionPool.check_connection

    def counting(conn):
        seen.append(conn)
        return real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
    return seen


@pytest.fixture
def pool(services):
    """One connection only, so every transaction gets the same one back (the pool is FIFO)."""
    one = db.make_pool(services.settings.database_url, max_size=1)
    yield one
    one.close()


def _backend_pid(pool, quick_check: bool = True) -> int:
    with db.transaction(pool, quick_check=quick_check) as conn:
        return conn.execute("select pg_backend_pid() as pid").fetchone()["pid"]


def test_a_connection_used_moments_ago_costs_no_check_round_trip(pool, round_trips):
    pid = _backend_pid(pool)
    round_trips.clear()
    for _ in range(5):
        assert _backend_pid(pool) == pid  # the same session, reused
    assert round_trips == []


def test_other_transactions_keep_the_round_trip_check(pool, round_trips):
    _backend_pid(pool)
    round_trips.clear()
    _backend_pid(pool, quick_check=False)
    assert len(round_trips) == 1


def test_a_connection_idle_longer_than_the_bound_gets_the_round_trip(pool, round_trips, monkeypatch):
    _backend_pid(pool)
    monkeypatch.setattr(db, "ROUND_TRIP_CHECK_AFTER_IDLE_SECONDS", 0.0)
    round_trips.clear()
    _backend_pid(pool)
    assert len(round_trips) == 1


def test_a_session_the_server_ended_is_replaced_without_an_error(pool, sql, round_trips):
    old = _backend_pid(pool)
    sql(f"select pg_terminate_backend({old})")
    time.sleep(0.2)  # the backend's FATAL reaches the client's socket
    new = _backend_pid(pool)  # no OperationalError: the pool discarded the dead one
    assert new != old
    assert round_trips, "the readable socket sent it to the round-trip check, which failed"


def test_a_broken_connection_is_never_handed_out(pool, round_trips):
    with db.transaction(pool, quick_check=True) as conn:
        conn.execute("select 1").fetchone()
        dead = conn
    dead.pgconn.finish()  # as if the client side of the socket broke
    with db.transaction(pool, quick_check=True) as conn:
        assert conn is not dead and conn.execute("select 1 as one").fetchone() == {"one": 1}
