"""GET /api/metrics: real slot figures in Redis, real deliveries in PostgreSQL, read back with
prometheus_client's own parser and compared with `python -m app status`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import tasks
from app.health import sharedreport
from app.queue.instance import huey
from app.web import routes
from tests.conftest import TEST_ENV
from tests.test_web import bearer, call

TERM = "2261"
NOW = dt.datetime.now(dt.timezone.utc)
MINUTE_7 = NOW.replace(minute=7, second=0, microsecond=0)


@pytest.fixture
def app(services):
    services.heartbeat.beat()
    huey.storage.flush_all()
    yield routes.make_app(services, health_cache_seconds=0)
    huey.storage.flush_all()


def samples(body: bytes) -> dict:
    """(name, sorted labels) -> value, through prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def drain() -> None:
    while huey.pending_count():
        task = huey.dequeue()
        task.retries = 0
        huey.execute(task)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic abc"}])
def test_metrics_need_the_cron_secret(app, headers):
    answer = call(app, "GET", "/api/metrics", headers)
    assert answer.status == 401 and answer.json["success"] is False
    assert answer.headers["www-authenticate"] == "Bearer"
    assert b"seatwatch_" not in answer.body


def test_metrics_match_python_m_app_status(app, services, scraper, make_watch):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
    scraper.set_section(TERM, "12430", seats_available=0)
    scraper.set_section(TERM, "12432", seats_available=0)  # 12434 is unknown: fails every try
    tasks.run_cron_now("even", now=MINUTE_7)
    drain()
    for _ in range(3):
        services.breaker.record_failure()

    answer = call(app, "GET", "/api/metrics", bearer(services))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert answer.headers["cache-control"] == "no-store"
    got = samples(answer.body)
    cp = subprocess.run([sys.executable, "-m", "app", "status", "--json"],
                        env={**os.environ, **TEST_ENV}, capture_output=True, text=True, timeout=60)
    status = json.loads(cp.stdout)
    even = status["groups"]["even"]
    assert even["sections"] == 3 and even["failed"] == 1  # the figures are real, not zeros
    for outcome in ("done", "checked", "changed", "emailed", "failed", "remaining"):
        assert got[("seatwatch_slot_checks", (("group", "even"), ("outcome", outcome)))] == even[outcome]
    assert got[("seatwatch_slot_sections", (("group", "even"),))] == even["sections"]
    assert got[("seatwatch_slot_duration_seconds", (("group", "even"),))] == even["duration_seconds"]
    assert got[("seatwatch_slot_finished_age_seconds", (("group", "even"),))] >= 0
    assert not any(k[0] == "seatwatch_slot_sections" and ("group", "odd") in k[1] for k in got)
    assert got[("seatwatch_queue_backlog", ())] == status["backlog"] == 0
    assert status["circuit_breaker"] == "CLOSED"
    assert got[("seatwatch_breaker_state", ())] == 0
    failures = services.breaker.status()["failure_count"]
    assert failures >= 3 and got[("seatwatch_breaker_failures", ())] == failures
    assert got[("seatwatch_dead_letters", ())] == 1
    assert got[("seatwatch_check_status", (("check", "queue"),))] == 1  # degraded: a dead letter
    assert got[("seatwatch_health_status", ())] == 1
    assert 0 <= got[("seatwatch_scheduler_heartbeat_age_seconds", ())] < 60
    assert got[("seatwatch_emails", (("state", "pending"),))] == 0
    assert got[("seatwatch_alert_incident_open", ())] == 0
    # its own registry: no process, platform or gc collectors describing the host
    assert not any(name.startswith(("process_", "python_")) for name, _ in got)


def test_breaker_open_is_2_and_alert_tallies_are_counters(app, services, monkeypatch):
    for _ in range(10):
        services.breaker.record_failure()
    settings = dataclasses.replace(services.settings, alert_urls=("https://hooks.test/x",))
    monkeypatch.setattr(services, "settings", settings)
    services.redis.set(services.keys.alerts, json.dumps(
        {"open": True, "sent": {"alert/webhook": 2, "recovered/webhook": 1},
         "failed": {"alert/email": 4}}))
    metrics_app = routes.make_app(services, health_cache_seconds=0)
    got = samples(call(metrics_app, "GET", "/api/metrics", bearer(services)).body)
    assert got[("seatwatch_breaker_state", ())] == 2
    assert got[("seatwatch_alerts_sent_total", (("channel", "webhook"), ("event", "alert")))] == 2
    assert got[("seatwatch_alerts_sent_total", (("channel", "webhook"), ("event", "recovered")))] == 1
    assert got[("seatwatch_alerts_failed_total", (("channel", "email"), ("event", "alert")))] == 4
    assert got[("seatwatch_alert_incident_open", ())] == 1


def test_metrics_are_cached_like_health(services):
    services.heartbeat.beat()
    cached = routes.make_app(services)  # the default: one report per 5 s
    call(cached, "GET", "/api/monitoring/health")
    services.redis.config_resetstat()
    first = call(cached, "GET", "/api/metrics", bearer(services))
    second = call(cached, "GET", "/api/metrics", bearer(services))
    stats = services.redis.info("commandstats")
    assert first.body == second.body
    # the health report the health URL computed served both: no Redis command at all
    assert sum(v["calls"] for k, v in stats.items() if k != "cmdstat_config|resetstat") == 0


def test_the_web_shares_its_health_report_only_when_alerts_are_on(services, monkeypatch):
    services.heartbeat.beat()
    call(routes.make_app(services, health_cache_seconds=0), "GET", "/api/monitoring/health")
    assert sharedreport.latest(services.redis, services.keys) is None
    monkeypatch.setattr(services, "settings", dataclasses.replace(
        services.settings, alert_emails=("ops@example.test",)))
    answer = call(routes.make_app(services, health_cache_seconds=0), "GET", "/api/monitoring/health")
    shared = sharedreport.latest(services.redis, services.keys)
    assert shared["timestamp"] == answer.json["timestamp"] and shared["status"] == "healthy"
    assert set(shared["checks"]) == set(answer.json["checks"])
