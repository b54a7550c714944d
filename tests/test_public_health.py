"""The anonymous health answer, scanned in every failing state for what a stranger must not learn:
host names, addresses, paths, release ids, library messages (issue 27). Through the real web app,
with real Redis and PostgreSQL and real dead ends."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time

import pytest

from app.web import routes
from tests.deadends import HungServer, closed_port, pg_url, redis_url, services_with
from tests.test_web import call

WORKER_HOST = "worker-7.internal-10-0-3-17"
RELEASE = "20261206T2150-3f9c2ab"
FORBIDDEN = [
    re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"),  # an IPv4 address
    re.compile(r"\[?[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}\]?:\d+"),  # an IPv6 address with a port
    re.compile(r"worker-7|internal|localhost", re.I),
    re.compile(re.escape(os.uname().nodename)),
    re.compile(re.escape(RELEASE)),
    re.compile(r"3f9c2ab"),
    re.compile(r"Traceback|refused|Errno|connection to server|timeout expired|Error \d+", re.I),
    re.compile(r"/(?!min\b)"),  # a path (the draft format's unit "checks/min" aside)
]


def scan(body: str) -> None:
    for pattern in FORBIDDEN:
        found = pattern.search(body)
        assert not found, f"{pattern.pattern!r} matched {found.group(0)!r} in {body}"


def anonymous_answers(services) -> list[str]:
    app = routes.make_app(services, health_cache_seconds=0)
    plain = call(app, "GET", "/api/monitoring/health")
    draft = call(app, "GET", "/api/monitoring/health", {"Accept": "application/health+json"})
    assert plain.json["view"] == "public"
    assert plain.json["status"] != "healthy"  # a failing state, as each test means it
    return [plain.body.decode(), draft.body.decode()]


@pytest.fixture
def released(services, monkeypatch):
    settings = dataclasses.replace(services.settings, release=RELEASE)
    monkeypatch.setattr(services, "settings", settings)
    services.heartbeat.release = RELEASE
    return services


def worker_only_host_beats(services) -> None:
    beat = {"at": time.time(), "release": RELEASE, "pid": 4242, "started": time.time() - 60,
            "scheduler": False}
    services.redis.delete(services.keys.heartbeat)
    services.redis.hset(services.keys.heartbeat, WORKER_HOST, json.dumps(beat))


STATES = {
    "a worker-only host, no scheduler": lambda s: worker_only_host_beats(s),
    "a stale scheduler beat": lambda s: s.heartbeat.beat(now=time.time() - 3600),
    "the breaker open": lambda s: [s.breaker.record_failure() for _ in range(10)],
    "dead letters naming a host": lambda s: s.dead_letters.add(
        "2261", "12430", reason=f"scraper at 10.0.3.17 ({WORKER_HOST}): /srv/scrape failed",
        attempts=4),
    "a cron slot overdue": lambda s: s.redis.set(s.keys.last_cron("even"), json.dumps(
        {"at": "2026-01-01T00:07:00+00:00", "slot": "2026-01-01T00:00:even", "sections_enqueued": 1,
         "sections_found": 1, "duration_ms": 3, "late_seconds": 0})),
}


@pytest.mark.parametrize("state", list(STATES))
def test_the_anonymous_answer_names_no_host_address_path_release_or_library_message(
        released, state):
    released.heartbeat.beat()
    STATES[state](released)
    for body in anonymous_answers(released):
        scan(body)


@pytest.mark.parametrize("dependency", ["redis", "database"])
@pytest.mark.parametrize("how", ["down", "hung"])
def test_the_anonymous_answer_with_a_dependency_down_or_hung_names_nothing(released, dependency,
                                                                           how):
    released.heartbeat.beat()
    hung = HungServer() if how == "hung" else None
    port = hung.port if hung else closed_port()
    try:
        change = ({"redis_url": redis_url(port)} if dependency == "redis"
                  else {"database_url": pg_url(port)})
        bad = services_with(released, **change)
        for body in anonymous_answers(bad):
            scan(body)
    finally:
        if hung:
            hung.close()


def test_the_cron_secret_still_sees_the_host_names(released):
    worker_only_host_beats(released)
    app = routes.make_app(released, health_cache_seconds=0)
    full = call(app, "GET", "/api/monitoring/health",
                {"Authorization": f"Bearer {released.settings.cron_secret}"})
    assert full.json["view"] == "full" and WORKER_HOST in full.body.decode()
