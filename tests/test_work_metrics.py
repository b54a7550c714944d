"""/api/metrics' figures of the work itself (issue 27): real checks run as a worker runs them (one
failing at the scraper stand-in), counted in the worker's memory, flushed to real Redis on the tick,
and read back from the web with prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from app import tasks, workstats
from app.queue.instance import huey
from app.web import routes
from tests.test_alerts import command_calls
from tests.test_metrics import drain, samples
from tests.test_web import bearer, call

TERM = "2261"
MINUTE_7 = dt.datetime.now(dt.timezone.utc).replace(minute=7, second=0, microsecond=0)


@pytest.fixture
def fresh(services, monkeypatch):
    monkeypatch.setattr(workstats, "stats", workstats.WorkStats())
    services.redis.delete(services.keys.work_stats)
    services.heartbeat.beat()
    huey.storage.flush_all()
    yield services
    huey.storage.flush_all()
    services.redis.delete(services.keys.work_stats)


def test_checks_emails_duration_build_and_memory_reach_the_metrics(fresh, scraper, make_watch,
                                                                   monkeypatch):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
    scraper.set_section(TERM, "12430", seats_available=0)
    scraper.set_section(TERM, "12432", seats_available=0)  # 12434 is unknown: its check fails
    tasks.run_cron_now("even", now=MINUTE_7)
    drain()
    tasks.work_stats(None, True)  # the worker's tick
    monkeypatch.setattr(fresh, "settings", dataclasses.replace(fresh.settings, release="r-2026-12-06"))
    app = routes.make_app(fresh, health_cache_seconds=0)
    got = samples(call(app, "GET", "/api/metrics", bearer(fresh)).body)

    assert got[("seatwatch_checks_total", (("outcome", "done"),))] == 2
    assert got[("seatwatch_checks_total", (("outcome", "failed"),))] == 1
    assert got[("seatwatch_checks_total", (("outcome", "skipped"),))] == 0
    assert ("seatwatch_emails_sent_total", (("outcome", "delivered"),)) in got
    assert got[("seatwatch_check_duration_seconds_count", ())] == 3
    assert got[("seatwatch_check_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("seatwatch_check_duration_seconds_sum", ())] > 0
    assert got[("seatwatch_build_info", (("release", "r-2026-12-06"),))] == 1
    web_rss = got[("seatwatch_process_resident_memory_bytes", (("host", ""), ("process", "web")))]
    assert web_rss > 10 * 2 ** 20
    assert any(name == "seatwatch_process_resident_memory_bytes" and dict(labels)["process"] == "worker"
               for name, labels in got)


def test_an_idle_tick_flushes_nothing(fresh):
    tasks.work_stats(None, True)  # the first flush writes the worker's memory once
    fresh.redis.config_resetstat()
    for _ in range(10):
        tasks.work_stats(None, True)
    assert command_calls(fresh.redis) == 0
