"""DATABASE_URL and REDIS_URL are validated at start-up naming the variable, never the value, and
no output of this service (its errors, its log lines, psycopg's and the pool's own warnings, the
deploy's) shows a secret it knows (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
import uuid

import pytest

from app.settings import Settings, SettingsError
from tests.conftest import TEST_ENV

PASSWORD = "pw-" + uuid.uuid4().hex  # unique: found in the output only if it leaked

MALFORMED_DSNS = {
    "no colon after the scheme": f"postgres//app:{PASSWORD}@127.0.0.1/db",
    "unknown query parameter": f"postgresql://app:{PASSWORD}@127.0.0.1/db?sslmod=require",
    "port not a number": f"postgresql://app:{PASSWORD}@127.0.0.1:fivefour/db",
    "port out of range": f"postgresql://app:{PASSWORD}@127.0.0.1:99999/db",
    "unescaped @ in the password": f"postgresql://app:x@{PASSWORD}@127.0.0.1/db",
    "bad percent-encoding": f"postgresql://app:{PASSWORD}%zz@127.0.0.1/db",
    "not postgres at all": f"https://app:{PASSWORD}@127.0.0.1/db",
}
MALFORMED_REDIS = {
    "no colon after the scheme": f"redis//:{PASSWORD}@127.0.0.1:6379/0",
    "port not a number": f"redis://:{PASSWORD}@127.0.0.1:six/0",
    "# in the password": f"redis://:{PASSWORD}#x@127.0.0.1:6379/0",
    "db not a number": f"redis://:{PASSWORD}@127.0.0.1:6379/zero",
}


def printed(exc: BaseException) -> str:
    """The traceback Python would print, chained exceptions included."""
    return "".join(traceback.format_exception(exc))


def run_app(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dsn", MALFORMED_DSNS.values(), ids=MALFORMED_DSNS.keys())
def test_a_malformed_database_url_stops_start_up_naming_it_without_its_value(dsn):
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        Settings.from_env({**TEST_ENV, "DATABASE_URL": dsn})
    assert PASSWORD not in printed(caught.value)


@pytest.mark.parametrize("url", MALFORMED_REDIS.values(), ids=MALFORMED_REDIS.keys())
def test_a_malformed_redis_url_stops_start_up_naming_it_without_its_value(url):
    with pytest.raises(SettingsError, match="REDIS_URL") as caught:
        Settings.from_env({**TEST_ENV, "REDIS_URL": url})
    assert PASSWORD not in printed(caught.value)


def test_well_formed_urls_still_pass():
    for dsn in ("postgresql://postgres.abcd:p%40ss%2Fw@aws-0-us-west-1.pooler.supabase.com:5432/postgres",
                "postgres://u@127.0.0.1/db?sslmode=require&connect_timeout=10",
                "host=127.0.0.1 port=5432 dbname=db user=u password=secret",
                "postgresql://u:p@h1:5432,h2:5433/db"):
        assert Settings.from_env({**TEST_ENV, "DATABASE_URL": dsn}).database_url == dsn
    for url in ("redis://127.0.0.1:6379/0", "rediss://default:x@eu1.upstash.io:6379",
                "redis://:p%23w@127.0.0.1:6379", "unix:///run/redis.sock?db=1"):
        assert Settings.from_env({**TEST_ENV, "REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("dsn", [*MALFORMED_DSNS.values()], ids=[*MALFORMED_DSNS.keys()])
def test_migrate_with_a_malformed_dsn_fails_naming_database_url_and_prints_no_password(dsn):
    cp = run_app("migrate", DATABASE_URL=dsn)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 2, out
    assert "DATABASE_URL" in out and PASSWORD not in out


def test_migrate_that_cannot_connect_prints_no_password():
    cp = run_app("migrate", DATABASE_URL=f"postgresql://app:{PASSWORD}@127.0.0.1:1/db")
    assert cp.returncode == 1 and "OperationalError" in cp.stderr
    assert PASSWORD not in cp.stdout + cp.stderr


def test_the_pools_own_warnings_are_masked():
    """psycopg_pool logs, from its own threads and loggers, the libpq error, which quotes the whole
    connection string; the service's log setup masks it (and any other secret it knows)."""
    code = ("from app import logs; logs.setup()\n"
            "import logging, os\n"
            "from psycopg_pool import ConnectionPool, PoolTimeout\n"
            "pool = ConnectionPool(os.environ['DATABASE_URL'], min_size=1, open=False)\n"
            "try:\n    pool.open(wait=True, timeout=1)\nexcept PoolTimeout:\n    pass\n"
            "logging.getLogger('huey.consumer').warning('cron secret %s', os.environ['CRON_SECRET'])\n"
            "logging.getLogger('app.x').error('resend key: ' + os.environ['RESEND_API_KEY'])\n")
    dsn = f"postgres//app:{PASSWORD}@127.0.0.1/db"  # the pool is given it as is, unvalidated
    cp = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DATABASE_URL": dsn},
                        capture_output=True, text=True, timeout=60)
    assert "error connecting" in cp.stderr, cp.stderr  # the pool's warning was printed...
    assert "cron secret ***" in cp.stderr and "resend key: ***" in cp.stderr
    for secret in (PASSWORD, TEST_ENV["CRON_SECRET"], TEST_ENV["RESEND_API_KEY"]):
        assert secret not in cp.stderr + cp.stdout  # ...with no secret in it


def test_an_uncaught_error_is_masked_too():
    code = ("from app import logs; logs.setup()\n"
            "import os\nraise RuntimeError('token ' + os.environ['SCRAPER_SECRET_TOKEN'])\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "RuntimeError: token ***" in cp.stderr
    assert TEST_ENV["SCRAPER_SECRET_TOKEN"] not in cp.stderr


def test_what_is_written_to_stderr_without_logging_is_masked():
    """Bottle writes an unexpected error's traceback straight to waitress's wsgi.errors (stderr)."""
    code = ("from app import logs; logs.setup()\n"
            "import os, sys, wsgiref.util, bottle\n"
            "app = bottle.Bottle()\n"
            "@app.get('/boom')\n"
            "def boom():\n    raise RuntimeError('dsn=' + os.environ['DATABASE_URL'])\n"
            "environ = {'PATH_INFO': '/boom'}\n"
            "wsgiref.util.setup_testing_defaults(environ)\n"
            "environ['wsgi.errors'] = sys.stderr  # as waitress sets it, per request\n"
            "app(environ, lambda *a: None)\n"
            "print('resend key', os.environ['RESEND_API_KEY'], file=sys.stderr)\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "resend key ***" in cp.stderr and "dsn=***" in cp.stderr, cp.stderr
    assert TEST_ENV["RESEND_API_KEY"] not in cp.stderr and TEST_ENV["DATABASE_URL"] not in cp.stderr


def test_the_deploy_stops_on_a_malformed_dsn_naming_it_and_printing_no_password():
    """pyinfra's own output, before any host is touched: the deploy validates with the app's
    settings (roles/common.py), so the migration step never runs with it."""
    from tests.test_deploy_config import GOOD_ENV, plan

    cp = plan({**GOOD_ENV, "DATABASE_URL": MALFORMED_DSNS["no colon after the scheme"]})
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0 and "DATABASE_URL" in out
    assert PASSWORD not in out


def test_alert_and_ping_urls_are_masked_each_on_its_own():
    from app.settings import known_secrets

    env = {"SEATWATCH_ALERT_URLS": "https://hooks.example/t0ken-abc, ntfy://tok3n/topic",
           "SEATWATCH_PING_URL": "https://hc-ping.example/0b1d-uuid"}
    secrets = known_secrets(env)
    for url in ("https://hooks.example/t0ken-abc", "ntfy://tok3n/topic", "https://hc-ping.example/0b1d-uuid"):
        assert url in secrets
