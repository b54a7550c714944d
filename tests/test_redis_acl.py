"""The app's Redis credentials reach the data and nothing more (issue 27): templates/redis.conf.j2 as
rendered for Redis 6.0 and 7.0+, run by the installed redis-server on a private port, refuses every
administrative command to the app's own URL, while a real worker, a real cron run and health all do
their work through it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
import redis

from app import db
from app.services import Services
from app.settings import Settings
from tests.conftest import TEST_ENV
from tests.test_worker import Worker, wait_for

PORT = 16388  # this helper's private range
PASSWORD = 'pa ss"w#rd\\x'  # a space, a quote, a '#' and a backslash: quoting must hold
URL = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{PORT}/0"
REFUSED = [
    ("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "dir"), ("CONFIG", "REWRITE"),
    ("MODULE", "LOAD", "/tmp/evil.so"), ("DEBUG", "SLEEP", "0"), ("SAVE",), ("BGSAVE",),
    ("BGREWRITEAOF",), ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "NO", "ONE"),
    ("SLAVEOF", "NO", "ONE"), ("ACL", "SETUSER", "evil", "on", ">x", "+@all"), ("ACL", "LIST"),
    ("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("MIGRATE", "127.0.0.1", "1", "k", "0", "10"),
    ("CLIENT", "KILL", "127.0.0.1:1"), ("CLIENT", "LIST"), ("SLOWLOG", "GET"), ("LASTSAVE",),
    ("FAILOVER",),
]


def start_redis(version, tmp_path) -> subprocess.Popen:
    from roles.redis import render_conf

    text = render_conf(version, "127.0.0.1 -::1", PORT, "64mb", PASSWORD)
    assert "user default on #" in text and PASSWORD not in text.split("user default", 1)[1]
    assert (" &*" in text) is (version >= (6, 2))  # 6.0 does not know "&*" and would not start
    text = (text.replace("dir /var/lib/redis", f"dir {tmp_path}")
                .replace("pidfile /run/redis/redis-server.pid", f"pidfile {tmp_path}/r.pid")
                .replace("logfile /var/log/redis/redis-server.log", f"logfile {tmp_path}/r.log"))
    conf = tmp_path / "redis.conf"
    conf.write_text(text)
    proc = subprocess.Popen(["redis-server", str(conf)])
    client = redis.Redis.from_url(URL, socket_timeout=2)

    def up():
        assert proc.poll() is None, (tmp_path / "r.log").read_text()
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_for(up, 10, "the ACL'd redis-server")
    return proc


@pytest.fixture(params=[(6, 0), (7, 0)], ids=["rendered-for-6.0", "rendered-for-7.0"])
def acl_redis(request, tmp_path):
    proc = start_redis(request.param, tmp_path)
    yield redis.Redis.from_url(URL, socket_timeout=5)
    proc.terminate()
    proc.wait(10)


def test_the_apps_url_cannot_run_administrative_commands(acl_redis):
    for command in REFUSED:
        with pytest.raises(redis.ResponseError) as refused:
            acl_redis.execute_command(*command)
        # the ACL's NOPERM; MODULE on 7.0+ is refused even before it (enable-module-command)
        assert (isinstance(refused.value, redis.exceptions.NoPermissionError)
                or "not allowed" in str(refused.value)), (command, refused.value)
    assert acl_redis.ping()  # still up: SHUTDOWN was refused too
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=PORT, password="wrong").ping()


def test_the_worker_cron_and_health_work_through_the_restricted_user(acl_redis, sql, make_watch,
                                                                     scraper, tmp_path):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section("2261", nbr, seats_available=0)
    env = {**TEST_ENV, "REDIS_URL": URL}
    worker = Worker(**env)
    try:
        settings = Settings.from_env(env)
        services = Services(settings)
        wait_for(lambda: services.heartbeat.beats(), 30, "the worker's heartbeat")
        cron = subprocess.run([sys.executable, "-m", "app", "cron", "--group", "even", "--force"],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert cron.returncode == 0, cron.stderr
        assert '"sections_enqueued": 3' in cron.stdout
        wait_for(lambda: len(scraper.calls) >= 3, 30, "the three checks")
        wait_for(lambda: not any(services.pending.is_pending("2261", n)
                                 for n in ("12430", "12432", "12434")), 20, "the checks done")
        services.breaker.record_failure()  # the breaker's scripts
        lock = services.cron_lock.acquire()
        assert lock is not None
        services.cron_lock.force_release()
        from app.health import checks

        report = checks.run_checks(services)
        for name in ("redis", "queue", "scheduler", "circuit_breaker", "cron_lock", "cron"):
            assert report["checks"][name]["status"] == "healthy", report["checks"][name]
        time.sleep(1)
        output = worker.output()
        assert "NOPERM" not in output and "NoPermission" not in output, output[-3000:]
    finally:
        worker.kill()
