"""Shared fixtures: real Redis (db 15) and real PostgreSQL (a fresh database), stand-in servers.

The environment is set here, before any app module is imported, because the Huey instance is
built from the settings at import time (as it is in the consumer).
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis

from tests.fakes import RESEND_KEY, SCRAPER_TOKEN, FakeResend, FakeScraper

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Overridable so two runs on one machine (say, two developers) do not share a database.
TEST_DB = os.environ.get("SEATWATCH_TEST_DB", "seatwatch_test")
TEST_DSN = PG_ADMIN.rsplit("/", 1)[0] + f"/{TEST_DB}"
TEST_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# PgBouncer in transaction mode (scripts/services.sh), standing in for Supabase's pooler.
PGBOUNCER = os.environ.get("TEST_PGBOUNCER_URL", "postgresql://postgres@127.0.0.1:6543")
PGBOUNCER_DSN = f"{PGBOUNCER}/{TEST_DB}"

SCRAPER = FakeScraper().start()
RESEND = FakeResend().start()

TEST_ENV = {
    "DATABASE_URL": TEST_DSN,
    "REDIS_URL": TEST_REDIS,
    "SCRAPER_URL": SCRAPER.url + "/",  # trailing slash on purpose: the client must cope
    "SCRAPER_SECRET_TOKEN": SCRAPER_TOKEN,
    "RESEND_API_KEY": RESEND_KEY,
    "RESEND_API_URL": RESEND.url,
    "NOTIFICATION_FROM_EMAIL": "PickMyClass <alerts@example.test>",
    "NEXT_PUBLIC_SITE_URL": "https://pickmyclass.example",
    "CRON_SECRET": "cron-secret-for-tests-" + uuid.uuid4().hex,
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-secret-for-tests-" + uuid.uuid4().hex,
    "SCRAPER_TIMEOUT_SECONDS": "2",
    "HUEY_READ_TIMEOUT_SECONDS": "2",
    "SEATWATCH_NAME": "seatwatch-test",
}
os.environ.update(TEST_ENV)


def _require_servers() -> None:
    # Fail loudly: a test that needs Redis or PostgreSQL must not skip in CI.
    try:
        redis.Redis.from_url(TEST_REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise pytest.UsageError(f"Redis is not reachable at {TEST_REDIS} ({exc}); run `make services`")
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg.Error as exc:
        raise pytest.UsageError(f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); run `make services`")
    try:
        psycopg.connect(f"{PGBOUNCER}/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        raise pytest.UsageError(f"PgBouncer is not reachable at {PGBOUNCER} ({exc}); run `make services`")


@pytest.fixture(scope="session")
def database() -> str:
    _require_servers()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEST_DB} with (force)")
        conn.execute(f"create database {TEST_DB}")
    from app.db import migrations

    migrations.migrate(TEST_DSN, bootstrap=True)
    return TEST_DSN


@pytest.fixture
def services(database):
    """The process-wide services, with clean Redis and tables and reset stand-ins."""
    from app.services import get_services

    svc = get_services()
    svc.redis.flushdb()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("truncate auth.users, public.class_states, public.seatwatch_section_states, "
                     "public.delivery_batches, public.seatwatch_handover cascade")
    SCRAPER.sections.clear()
    SCRAPER.raw.clear()
    SCRAPER.calls.clear()
    SCRAPER.delay = 0
    SCRAPER._failures.clear()
    RESEND.reset()
    return svc


@pytest.fixture
def root_user() -> None:
    """For tests that need root (ownership, network namespaces): they fail rather than skip
    without it, as a test that cannot reach what it needs must in CI (which runs as root)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (file ownership or a network namespace), as `make test` has")


@pytest.fixture
def queue(services):
    """huey's queue (and its schedule), empty before and after the test."""
    from app.queue.instance import huey

    huey.storage.flush_all()
    yield huey
    huey.storage.flush_all()


@pytest.fixture
def scraper() -> FakeScraper:
    return SCRAPER


@pytest.fixture
def resend_server() -> FakeResend:
    return RESEND


@pytest.fixture
def sql(database):
    """Run SQL against the test database (autocommit), returning rows as dicts."""
    from psycopg.rows import dict_row

    conn = psycopg.connect(database, autocommit=True, row_factory=dict_row)

    def run(query: str, params=()):
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else cur.rowcount

    yield run
    conn.close()


@pytest.fixture
def make_watch(sql):
    """Create a user (with an optional profile) watching a section; returns (user_id, watch_id)."""

    def make(email: str, class_nbr: str, term: str = "2261", profile: dict | None = None):
        user_id = sql("insert into auth.users (email) values (%s) returning id", (email,))[0]["id"]
        watch_id = sql(
            """insert into public.class_watches (user_id, term, subject, catalog_nbr, class_nbr)
               values (%s, %s, 'CSE', '110', %s) returning id""",
            (user_id, term, class_nbr),
        )[0]["id"]
        if profile is not None:
            cols = ["user_id", *profile]
            sql(f"insert into public.user_profiles ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})",
                (user_id, *profile.values()))
        return str(user_id), str(watch_id)

    return make


@pytest.fixture
def holding_child():
    """`start(code, *args)`: a Python child running `code` (which prints "ready" once it holds what it
    should, then reads stdin), returned once ready; every child ends when the test does (stdin closed).
    The memory benches' tests read real /proc files of such children."""
    import subprocess
    import sys

    procs = []

    def start(code: str, *args: str):
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stdin.close()
        p.wait(timeout=10)
