"""The health checks against real Redis and PostgreSQL, and against real sockets that are down or hung."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from app import db
from app.db import batches, watches
from app.health import checks
from app.health.report import as_health_json
from tests.deadends import (HungServer, assert_no_secrets, closed_port, pg_url, redis_url,
                            services_with)

CHECKS = {"database", "redis", "queue", "scheduler", "circuit_breaker", "cron_lock", "cron", "schedule_owner",
          "deliveries", "configuration", "email", "capacity"}


@pytest.fixture
def alive(services):
    """Everything fine: the services fixture's clean state plus a consumer heartbeat."""
    services.heartbeat.beat()
    return services


def statuses(report: dict) -> dict:
    return {name: c["status"] for name, c in report["checks"].items()}


def run(services) -> dict:
    report = checks.run_checks(services)
    assert_no_secrets(json.dumps(report), services)
    assert_no_secrets(json.dumps(as_health_json(report)), services)
    return report


def test_healthy_report_has_every_check(alive):
    report = run(alive)
    assert report["status"] == "healthy", report
    assert set(report["checks"]) == CHECKS
    assert set(statuses(report).values()) == {"healthy"}
    c = report["checks"]
    assert c["database"]["latency_ms"] >= 0 and c["redis"]["latency_ms"] >= 0
    # Other suites may share this Redis database: the counts are there, their values are theirs.
    assert c["queue"]["dead_letters"] == 0 and {"pending", "scheduled"} <= set(c["queue"])
    assert c["scheduler"]["alive"] and c["scheduler"]["age_seconds"] < 5
    assert c["circuit_breaker"]["state"] == "CLOSED" and c["circuit_breaker"]["type"] == "redis"
    assert {"failure_count", "success_count", "last_failure", "last_state_change"} <= set(c["circuit_breaker"])
    assert c["cron_lock"] == {"status": "healthy", "type": "redis", "locked": False, "lock_holder": None,
                              "lock_acquired_at": None, "expires_at": None, "time_held_ms": None}
    assert c["cron"] == {"status": "healthy", "even": None, "odd": None}
    assert c["deliveries"] == {"status": "healthy", "pending": 0, "overdue": 0, "failed": 0}
    assert c["configuration"] == {"status": "healthy", "missing": []}
    assert c["email"] == {"status": "healthy", "configured": True, "provider": "resend"}
    assert c["capacity"]["groups"] == {"even": None, "odd": None}
    assert c["capacity"]["throughput_per_minute"] is None and "backlog" in c["capacity"]
    assert isinstance(report["response_time_ms"], int) and report["response_time_ms"] < 1000
    assert report["timestamp"].endswith("Z")


# --- unhealthy -------------------------------------------------------------------------------

def test_redis_down_is_unhealthy_and_fast(alive):
    bad = services_with(alive, redis_url=redis_url(closed_port()))
    started = time.monotonic()
    report = run(bad)
    assert time.monotonic() - started < 1.5
    assert report["status"] == "unhealthy"
    s = statuses(report)
    assert s["redis"] == "unhealthy" and s["scheduler"] == "unhealthy"
    assert s["circuit_breaker"] == s["queue"] == s["cron_lock"] == "degraded"  # failed, not critical
    assert s["database"] == "healthy"
    assert "ConnectionError" in report["checks"]["redis"]["error"]


def test_database_unreachable_is_unhealthy(alive):
    bad = services_with(alive, database_url=pg_url(closed_port()))
    report = run(bad)
    assert report["status"] == "unhealthy"
    assert statuses(report)["database"] == "unhealthy" and statuses(report)["deliveries"] == "degraded"
    assert "no database connection" in report["checks"]["database"]["error"]
    assert statuses(report)["redis"] == "healthy"


@pytest.mark.parametrize("dependency", ["redis_url", "database_url"])
def test_hung_dependency_is_bounded_by_the_deadline(alive, dependency):
    with HungServer() as hung:
        url = redis_url(hung.port) if dependency == "redis_url" else pg_url(hung.port)
        bad = services_with(alive, **{dependency: url})
        started = time.monotonic()
        report = run(bad)
        took = time.monotonic() - started
    assert took < checks.DEADLINE_SECONDS + 0.5, took
    assert report["status"] == "unhealthy"
    failed = report["checks"]["redis" if dependency == "redis_url" else "database"]
    assert failed["status"] == "unhealthy"
    assert "timeout" in failed["error"].lower()


def test_no_consumer_heartbeat_is_unhealthy(services):
    report = run(services)
    assert report["status"] == "unhealthy"
    assert report["checks"]["scheduler"]["alive"] is False
    assert report["checks"]["scheduler"]["reason"] == "no consumer heartbeat"


def test_stale_heartbeat_is_unhealthy(services):
    old = time.time() - checks.STALE_HEARTBEAT_SECONDS - 5
    # A bare epoch (an old release's beat) does not say it runs the scheduler: it proves nothing.
    services.redis.hset(services.keys.heartbeat, "old-release", f"{time.time():.3f}")
    assert run(services)["checks"]["scheduler"]["reason"] == "no scheduler heartbeat"
    services.redis.hset(services.keys.heartbeat, "gone-host", json.dumps(
        {"at": old, "release": "r1", "pid": 1, "scheduler": True}))
    report = run(services)
    scheduler = report["checks"]["scheduler"]
    assert report["status"] == "unhealthy" and scheduler["alive"] is False
    assert scheduler["host"] == "gone-host" and scheduler["age_seconds"] > checks.STALE_HEARTBEAT_SECONDS
    services.heartbeat.beat()  # a live consumer elsewhere: the newest beat counts
    assert run(services)["status"] == "healthy"


def test_missing_configuration_is_unhealthy(alive, monkeypatch):
    monkeypatch.setenv("RESEND_API_KEY", " ")
    monkeypatch.delenv("CRON_SECRET")
    report = run(alive)
    assert report["status"] == "unhealthy"
    assert report["checks"]["configuration"]["missing"] == ["RESEND_API_KEY", "CRON_SECRET"]


def test_email_not_configured_is_unhealthy(alive):
    report = run(services_with(alive, resend_api_key=""))
    assert report["checks"]["email"] == {"status": "unhealthy", "configured": False, "provider": "resend",
                                         "reason": "Resend key or sender address missing"}


# --- degraded --------------------------------------------------------------------------------

def test_open_breaker_is_degraded_not_down(alive):
    for _ in range(10):
        alive.breaker.record_failure()
    report = run(alive)
    assert report["status"] == "degraded"
    breaker = report["checks"]["circuit_breaker"]
    assert breaker["status"] == "degraded" and breaker["state"] == "OPEN"
    assert breaker["failure_count"] == 10 and breaker["last_failure"] and breaker["last_state_change"]


def test_half_open_breaker_is_degraded(alive):
    alive.redis.hset(alive.keys.breaker, mapping={"state": "half_open", "failures": 10})
    report = run(alive)
    assert report["status"] == "degraded"
    assert report["checks"]["circuit_breaker"]["state"] == "HALF_OPEN"


def test_dead_letters_are_degraded(alive):
    alive.dead_letters.add("2261", "12430", reason="HTTP 500", attempts=4)
    report = run(alive)
    assert report["status"] == "degraded"
    assert report["checks"]["queue"]["dead_letters"] == 1
    assert report["checks"]["queue"]["status"] == "degraded"


def test_overdue_cron_is_degraded(alive):
    def record(group, seconds_ago):
        at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - seconds_ago))
        alive.redis.set(alive.keys.last_cron(group), json.dumps(
            {"at": at, "sections_enqueued": 7, "sections_found": 7, "duration_ms": 12}))

    record("even", 60)
    record("odd", 30 * 60)
    report = run(alive)
    assert report["status"] == "healthy"
    assert report["checks"]["cron"]["even"]["sections_enqueued"] == 7
    assert report["checks"]["cron"]["even"]["duration_ms"] == 12
    record("odd", checks.OVERDUE_CRON_SECONDS + 60)
    report = run(alive)
    assert report["status"] == "degraded"
    assert report["checks"]["cron"]["reason"] == "cron overdue: odd"


def test_overdue_delivery_backlog_is_degraded(alive, make_watch, sql):
    _, watch_id = make_watch("a@asu.edu", "12430")
    with db.transaction(alive.pool) as conn:
        [nid] = watches.claim_notifications(conn, [watch_id], "seat_available")
        batches.add_batch(conn, "batch-1", "seat_available", [(nid, {"to": ["a@asu.edu"]})])
    report = run(alive)
    assert report["checks"]["deliveries"] == {"status": "healthy", "pending": 1, "overdue": 0, "failed": 0}
    sql("update delivery_batches set created_at = now() - interval '1 hour'")  # counted by batch
    report = run(alive)
    assert report["status"] == "degraded"
    assert report["checks"]["deliveries"]["overdue"] == 1


def test_a_held_cron_lock_is_reported_not_degraded(alive):
    lock = alive.cron_lock.acquire()
    try:
        report = run(alive)
    finally:
        alive.cron_lock.release(lock)
    held = report["checks"]["cron_lock"]
    assert report["status"] == "healthy" and held["locked"] is True
    assert held["lock_holder"] and held["lock_acquired_at"] and held["expires_at"]


# --- the draft format, secrets, the CLI --------------------------------------------------------

def test_health_json_form(alive):
    alive.dead_letters.add("2261", "12430", reason="x", attempts=4)
    draft = as_health_json(run(alive))
    assert draft["status"] == "warn"
    for key, entries in draft["checks"].items():
        assert ":" in key and isinstance(entries, list) and entries
        assert all(e["status"] in ("pass", "warn", "fail") and e["time"] for e in entries)
    [dead] = draft["checks"]["queue:deadLetters"]
    assert dead["status"] == "warn" and dead["observedValue"] == 1 and "dead-letters" in dead["output"]
    [pg] = draft["checks"]["postgresql:responseTime"]
    assert pg["componentType"] == "datastore" and pg["observedUnit"] == "ms"
    assert [e["componentId"] for e in draft["checks"]["cron:lastRunAge"]] == ["even", "odd"]


def test_errors_never_carry_a_password(alive):
    secret = "hunter2-" + os.urandom(4).hex()
    bad = services_with(alive, redis_url=f"redis://:{secret}@127.0.0.1:{closed_port()}/0")
    body = json.dumps(run(bad))
    assert secret not in body
    assert bad.settings.redact(f"auth {secret} failed for {bad.settings.redis_url}") == "auth *** failed for ***"


def cli(env_changes: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_changes}
    return subprocess.run([sys.executable, "-m", "app", "health"], env=env, capture_output=True,
                          text=True, timeout=30)


def test_cli_exits_zero_only_when_healthy(alive):
    done = cli({})
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["status"] == "healthy" and set(report["checks"]) == CHECKS
    down = cli({"REDIS_URL": redis_url(closed_port())})
    assert down.returncode == 1 and json.loads(down.stdout)["status"] == "unhealthy"
    alive.breaker.reset()
    for _ in range(10):
        alive.breaker.record_failure()
    degraded = cli({})
    assert degraded.returncode == 1 and json.loads(degraded.stdout)["status"] == "degraded"
    for out in (done, down, degraded):
        assert_no_secrets(out.stdout + out.stderr, alive)


def test_concurrent_reports_share_a_bounded_pool_of_sessions(alive, sql):
    """Uncached, 40 reports at once: PostgreSQL sees at most the health pool's sessions, and
    callers beyond the pool's waiting bound are refused at once instead of queueing."""
    from concurrent.futures import ThreadPoolExecutor

    def health_sessions() -> int:
        return sql("select count(*) as n from pg_stat_activity where application_name = 'seatwatch-health' "
                   "and datname = current_database()")[0]["n"]

    seen = []
    with ThreadPoolExecutor(max_workers=20) as pool:
        reports = [pool.submit(checks.run_checks, alive) for _ in range(40)]
        while not all(r.done() for r in reports):
            seen.append(health_sessions())
            time.sleep(0.01)
    results = [r.result()["checks"]["database"] for r in reports]
    assert any(r["status"] == "healthy" for r in results)
    assert all(r["status"] == "healthy" or r["error"].startswith("TooManyRequests") for r in results), results
    assert seen and max(seen) <= checks.HEALTH_POOL_SIZE, seen
    assert health_sessions() <= checks.HEALTH_POOL_SIZE
