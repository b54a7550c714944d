"""The dead man's switch: real cron runs and real checks (Redis, PostgreSQL, the scraper stand-in),
the ping URL on a capture server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import pytest

from app import db, tasks
from app.alerting import ping
from app.queue.instance import huey
from tests.capture import CaptureServer
from tests.deadends import closed_port, pg_url

TERM = "2261"
NOW = dt.datetime.now(dt.timezone.utc)
MINUTE_7 = NOW.replace(minute=7, second=0, microsecond=0)
CHECK = "/ping/0b7c1e2a-test-check"


@pytest.fixture
def hook():
    with CaptureServer() as server:
        yield server


@pytest.fixture
def pinging(services, hook, monkeypatch):
    monkeypatch.setattr(services, "settings",
                        dataclasses.replace(services.settings, ping_url=hook.url + CHECK))
    huey.storage.flush_all()
    yield services
    huey.storage.flush_all()


def drain() -> None:
    """Run what is queued as a worker would, each on its last attempt (a failure dead-letters)."""
    while huey.pending_count():
        task = huey.dequeue()
        task.retries = 0
        huey.execute(task)


def pings(hook, path: str, n: int = 1, wait: float = 5.0) -> list[dict]:
    """The requests to `path` once there are n of them (pings go on a thread of their own)."""
    deadline = time.monotonic() + wait
    while len(hook.to(path)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return hook.to(path)


def test_the_ping_url_is_hit_when_a_slot_finishes(pinging, hook, scraper, make_watch):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)
    assert tasks.run_cron_now("even", now=MINUTE_7)["sections_enqueued"] == 3
    assert hook.requests == []  # the run itself does not ping: its slot is not done yet
    drain()
    [got] = pings(hook, CHECK)
    assert got["method"] == "GET"
    assert hook.to(CHECK + "/fail") == []


def test_a_slot_with_more_than_half_its_checks_failed_pings_fail(pinging, hook, scraper,
                                                                  make_watch):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
    scraper.set_section(TERM, "12430", seats_available=0)  # the other two are unknown: they fail
    tasks.run_cron_now("even", now=MINUTE_7)
    drain()
    assert len(pings(hook, CHECK + "/fail")) == 1
    assert hook.to(CHECK) == []


def test_a_failed_cron_run_pings_fail(pinging, hook, monkeypatch):
    unreachable = db.make_pool(pg_url(closed_port()), timeout=1)
    monkeypatch.setattr(pinging, "pool", unreachable)
    try:
        with pytest.raises(Exception):
            tasks.run_cron_now("even", now=MINUTE_7)
    finally:
        unreachable.close()
    assert len(pings(hook, CHECK + "/fail")) == 1
    assert hook.to(CHECK) == []


def test_a_cron_run_with_nothing_to_check_pings_once_and_a_skipped_one_not(pinging, hook):
    assert tasks.run_cron_now("even", now=MINUTE_7)["sections_enqueued"] == 0
    assert len(pings(hook, CHECK)) == 1
    again = tasks.run_cron_now("even", now=MINUTE_7)
    assert again.get("skipped")
    time.sleep(0.2)  # a ping that should not come: give it the chance to show up
    assert len(hook.to(CHECK)) == 1


def test_a_ping_that_fails_is_logged_never_raised_nor_retried(services, hook, caplog):
    settings = dataclasses.replace(services.settings, ping_url=hook.url + CHECK)
    hook.fail_next(1, status=503)
    with caplog.at_level(logging.INFO, logger="app.alerting.ping"):
        ping.slot_finished(settings, {"slot": "s:even", "sections": 4, "failed": 0}).join(10)
        unreachable = dataclasses.replace(settings, ping_url=f"http://127.0.0.1:{closed_port()}/x")
        ping.cron_failed(unreachable).join(10)
    assert len(hook.to(CHECK)) == 1  # tried once
    messages = [r.getMessage() for r in caplog.records]
    assert any("answered HTTP 503" in m for m in messages)
    assert any("not delivered: ConnectionError" in m for m in messages)
    assert CHECK not in caplog.text  # the URL is the check's secret


def test_no_ping_url_no_ping(services):
    assert ping.slot_finished(services.settings, {"slot": "s", "sections": 1, "failed": 1}) is None
    assert ping.cron_failed(services.settings) is None


def test_a_cron_run_whose_sections_are_all_still_queued_pings_fail(pinging, hook, scraper,
                                                                   make_watch):
    """The stuck queue: the slot's sections are found, none is queued (all still waiting from the
    slot before), so nothing of this slot is checked: the ping says fail, never ok."""
    for nbr in ("12430", "12432"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)
    assert tasks.run_cron_now("even", now=MINUTE_7)["sections_enqueued"] == 2  # never drained
    stuck = tasks.run_cron_now("even", now=MINUTE_7 + dt.timedelta(hours=1))
    assert stuck["sections_enqueued"] == 0 and stuck["sections_found"] == 2
    assert len(pings(hook, CHECK + "/fail")) == 1
    time.sleep(0.2)
    assert hook.to(CHECK) == []


@pytest.mark.parametrize("url, failed", [
    ("https://hc-ping.com/0b7c", "https://hc-ping.com/0b7c/fail"),
    ("https://hc-ping.com/0b7c/", "https://hc-ping.com/0b7c/fail"),
    ("https://hc-ping.com/0b7c?rid=42", "https://hc-ping.com/0b7c/fail?rid=42"),
    ("https://kuma.example/api/push/Tok3n?status=up&msg=OK&ping=",
     "https://kuma.example/api/push/Tok3n?status=down&msg=OK&ping="),
])
def test_fail_goes_into_the_path_before_any_query(url, failed):
    assert ping.fail_url(url) == failed


def test_a_query_string_ping_url_fails_on_the_path(services, hook):
    settings = dataclasses.replace(services.settings, ping_url=hook.url + CHECK + "?rid=7")
    ping.cron_failed(settings).join(10)
    assert len(hook.to(CHECK + "/fail?rid=7")) == 1
    assert hook.to(CHECK + "?rid=7/fail") == [] and hook.to(CHECK + "?rid=7") == []


def test_python_m_app_cron_sends_its_ping_before_exiting(hook, services):
    import os
    import subprocess
    import sys

    from tests.conftest import TEST_ENV

    huey.storage.flush_all()
    env = {**os.environ, **TEST_ENV, "SEATWATCH_PING_URL": hook.url + CHECK}
    cp = subprocess.run([sys.executable, "-m", "app", "cron", "--group", "odd", "--force"],
                        env=env, capture_output=True, text=True, timeout=60)
    huey.storage.flush_all()
    assert cp.returncode == 0, cp.stderr
    assert len(hook.to(CHECK)) + len(hook.to(CHECK + "/fail")) == 1  # sent before the exit


def test_a_trickling_ping_peer_cannot_hold_the_ping(services, caplog):
    from tests.deadends import trickling_server

    with trickling_server() as url, caplog.at_level(logging.INFO, logger="app.alerting.ping"):
        settings = dataclasses.replace(services.settings, ping_url=url + CHECK)
        started = time.monotonic()
        ping.cron_failed(settings).join(30)
        took = time.monotonic() - started
    assert took < ping.PING_TIMEOUT_SECONDS + 2
    assert "not delivered" in caplog.text
