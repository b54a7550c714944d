"""Operator alerts against real Redis and PostgreSQL: the scraper failing opens the real breaker,
health's report says so, and the alerts reach a capture server (webhook) and the Resend stand-in
(email). The alert clock is injected; the checks themselves run for real."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest

from app import tasks
from app.alerting import alerts
from app.alerting.alerts import Alerts
from app.check.breaker import BreakerPolicy, CircuitBreaker
from app.check.run import CheckFailed, check_section
from app.health import sharedreport
from app.queue.instance import huey
from app.settings import Settings, SettingsError
from tests.capture import CaptureServer
from tests.conftest import TEST_ENV
from tests.deadends import closed_port
from tests.test_worker import start_worker, wait_for  # noqa: F401  (a fixture, and its helper)

TERM, NBR = "2261", "12430"
OPS = "ops@example.test"
AFTER = 90.0  # ticks in these tests come 70 s apart: the alert waits for the second one after
FAST = BreakerPolicy(open_seconds=0.3, trial_timeout_seconds=0.5)


class Clock:
    def __init__(self, start: float):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@pytest.fixture
def hook():
    with CaptureServer() as server:
        yield server


@pytest.fixture
def alerting(services, hook, resend_server, monkeypatch):
    """The services with alerts to the capture server and OPS, and a breaker that reopens fast."""
    settings = dataclasses.replace(services.settings, alert_urls=(hook.url + "/hook",),
                                   alert_emails=(OPS,), alert_after=AFTER)
    monkeypatch.setattr(services, "settings", settings)
    monkeypatch.setattr(services, "breaker", CircuitBreaker(services.redis,
                                                            services.keys.breaker, FAST))
    services.heartbeat.beat()
    huey.storage.flush_all()
    return services


@pytest.fixture
def clock():
    import time

    return Clock(time.time())


def fail_scraper_until_breaker_opens(services, scraper) -> None:
    scraper.set_section(TERM, NBR, seats_available=0)
    scraper.fail_next(10, status=500)
    for _ in range(10):
        with pytest.raises(CheckFailed):
            check_section(services, TERM, NBR)
    assert services.breaker.status()["state"] == "open"


def bring_scraper_back(services) -> None:
    import time

    time.sleep(FAST.open_seconds + 0.05)  # the breaker's wait runs on Redis's clock
    for _ in range(FAST.successes_to_close):
        check_section(services, TERM, NBR)
    assert services.breaker.status()["state"] == "closed"


def events(hook) -> list[dict]:
    return [r["json"] for r in hook.to("/hook")]


def test_breaker_opened_by_the_scraper_alerts_once_after_the_delay_then_recovers_once(
        alerting, scraper, resend_server, hook, clock):
    fail_scraper_until_breaker_opens(alerting, scraper)
    watcher = Alerts(alerting, clock=clock)

    assert watcher.tick() == []  # seen failing: the wait starts
    clock.advance(70)
    assert watcher.tick() == []  # 70 s < AFTER: a blip so far
    assert events(hook) == [] and resend_server.to(OPS) == []
    clock.advance(70)
    sent = watcher.tick()
    assert [e["event"] for e in sent] == ["alert"]

    [alert] = events(hook)
    assert alert["event"] == "alert" and alert["status"] == "degraded"
    assert alert["failing"] == ["circuit_breaker"] and alert["new"] == ["circuit_breaker"]
    assert "circuit_breaker" in alert["summary"] and "OPEN" in alert["summary"]
    assert alert["host"] and alert["at"].endswith("Z") and alert["text"] == alert["summary"]
    [email] = resend_server.to(OPS)
    assert "alert" in email["subject"] and "circuit_breaker" in email["text"]
    assert email["from"] == alerting.settings.notification_from_email

    for _ in range(3):  # the incident goes on: nothing more
        clock.advance(70)
        assert watcher.tick() == []
    assert len(events(hook)) == 1 and len(resend_server.to(OPS)) == 1

    bring_scraper_back(alerting)
    clock.advance(70)
    assert [e["event"] for e in watcher.tick()] == ["recovered"]
    for _ in range(2):
        clock.advance(310)  # quiet now: looks every 5 minutes
        assert watcher.tick() == []
    assert [e["event"] for e in events(hook)] == ["alert", "recovered"]
    recovered = events(hook)[1]
    assert recovered["status"] == "healthy" and recovered["failing"] == []
    assert [e["subject"].split(":")[0] for e in resend_server.to(OPS)] == [
        f"[{alerting.settings.name}] alert", f"[{alerting.settings.name}] recovered"]
    state = alerts.load_state(alerting.redis, alerting.keys)
    assert state["sent"] == {"alert/webhook": 1, "alert/email": 1, "recovered/webhook": 1,
                             "recovered/email": 1}
    assert not state["open"] and state["outbox"] == []


def test_a_restarted_consumer_sends_no_second_alert_for_the_same_incident(
        alerting, scraper, hook, resend_server, clock):
    fail_scraper_until_breaker_opens(alerting, scraper)
    first = Alerts(alerting, clock=clock)
    first.tick()
    clock.advance(AFTER + 1)
    assert [e["event"] for e in first.tick()] == ["alert"]

    restarted = Alerts(alerting, clock=clock)  # a new process: nothing in memory
    for _ in range(3):
        clock.advance(70)
        assert restarted.tick() == []
    assert len(events(hook)) == 1 and len(resend_server.to(OPS)) == 1


def test_a_restarted_worker_process_sends_no_second_alert(start_worker, services, hook):
    """The real `python -m app worker`, twice, during one incident (the breaker open)."""
    for _ in range(10):
        services.breaker.record_failure()  # open for its 2 minutes
    services.heartbeat.beat()  # the scheduler check is healthy from the first report on
    env = {"SEATWATCH_ALERT_URLS": hook.url + "/hook", "SEATWATCH_ALERT_AFTER_SECONDS": "0"}
    first = start_worker(**env)
    wait_for(lambda: events(hook), 20, "the first worker's alert")
    assert first.stop()[0] == 0
    evaluated = alerts.load_state(services.redis, services.keys)["evaluated_at"]

    second = start_worker(**env)
    wait_for(lambda: alerts.load_state(services.redis, services.keys)["evaluated_at"] != evaluated,
             20, "the restarted worker's first evaluation")
    assert second.stop()[0] == 0
    [alert] = events(hook)
    assert alert["event"] == "alert" and alert["failing"] == ["circuit_breaker"]
    assert alerts.load_state(services.redis, services.keys)["open"]


def test_only_one_host_sends(alerting, scraper, hook, clock):
    """Another host evaluating (holding the alert lock) means this one sends nothing."""
    fail_scraper_until_breaker_opens(alerting, scraper)
    Alerts(alerting, clock=clock).tick()
    clock.advance(AFTER + 1)
    other = alerting.redis.lock(alerting.keys.alerts_lock, timeout=60)
    assert other.acquire(blocking=False)
    assert Alerts(alerting, clock=clock).tick() is None
    other.release()
    assert events(hook) == []
    assert [e["event"] for e in Alerts(alerting, clock=clock).tick()] == ["alert"]
    assert len(events(hook)) == 1


def test_a_failing_url_is_retried_and_logged_and_resend_failing_does_not_hold_it_back(
        alerting, scraper, hook, resend_server, clock, caplog):
    fail_scraper_until_breaker_opens(alerting, scraper)
    watcher = Alerts(alerting, clock=clock)
    watcher.tick()
    clock.advance(AFTER + 1)
    hook.fail_next(1, status=502)
    resend_server.fail_next(1, status=500)
    with caplog.at_level(logging.WARNING, logger="app.alerting.alerts"):
        assert [e["event"] for e in watcher.tick()] == ["alert"]
    failures = [r.getMessage() for r in caplog.records if "failed (attempt 1" in r.getMessage()]
    assert len(failures) == 2 and any("HTTP 502" in m for m in failures)
    assert any("Resend HTTP 500" in m for m in failures)
    assert "/hook" not in caplog.text  # the URL's path may hold a token: only scheme and host
    assert len(hook.to("/hook")) == 1 and resend_server.to(OPS) == []

    clock.advance(70)  # the next evaluation retries both, with the same event
    assert watcher.tick() == []
    tried = events(hook)
    assert len(tried) == 2 and tried[0]["id"] == tried[1]["id"]
    assert len(resend_server.to(OPS)) == 1
    clock.advance(70)
    watcher.tick()
    assert len(events(hook)) == 2 and len(resend_server.to(OPS)) == 1
    state = alerts.load_state(alerting.redis, alerting.keys)
    assert state["failed"] == {"alert/webhook": 1, "alert/email": 1}
    assert state["outbox"] == []


def test_a_new_check_failing_during_the_incident_is_a_new_alert(alerting, scraper, hook, clock):
    fail_scraper_until_breaker_opens(alerting, scraper)
    watcher = Alerts(alerting, clock=clock)
    watcher.tick()
    clock.advance(AFTER + 1)
    watcher.tick()
    alerting.dead_letters.add(TERM, NBR, reason="scraper: HTTP 500", attempts=4)
    for _ in range(2):  # seen at the first, and at the second 70 s < AFTER later
        clock.advance(70)
        assert watcher.tick() == []
    clock.advance(70)
    [second] = watcher.tick()
    assert second["event"] == "alert" and second["new"] == ["queue"]
    assert second["failing"] == ["circuit_breaker", "queue"]
    assert [e["new"] for e in events(hook)] == [["circuit_breaker"], ["queue"]]


def test_a_blip_pages_nobody(alerting, scraper, hook, resend_server, clock):
    fail_scraper_until_breaker_opens(alerting, scraper)
    watcher = Alerts(alerting, clock=clock)
    watcher.tick()
    bring_scraper_back(alerting)
    clock.advance(70)
    assert watcher.tick() == []
    clock.advance(310)  # quiet again: the next look is 5 minutes on
    assert watcher.tick() == []
    assert events(hook) == [] and resend_server.to(OPS) == []
    assert alerts.load_state(alerting.redis, alerting.keys)["failing_since"] == {}


def test_the_evaluation_reuses_the_report_the_web_shared(alerting, clock):
    """A fresh report from the health URL is used as is: the checks do not run again."""
    from app.health import checks

    report = checks.run_checks(alerting)
    report["checks"]["circuit_breaker"]["status"] = "degraded"  # what the web saw
    sharedreport.publish(alerting.redis, alerting.keys, report)
    computed = []
    watcher = Alerts(alerting, compute=lambda: computed.append(1) or checks.run_checks(alerting),
                     clock=clock)
    watcher.tick()
    assert computed == []
    state = alerts.load_state(alerting.redis, alerting.keys)
    assert list(state["failing_since"]) == ["circuit_breaker"]


def command_calls(client) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",
                                                                 "cmdstat_config|resetstat"))


def test_an_idle_day_of_evaluations_costs_a_few_thousand_commands_at_most(alerting, clock):
    """1,440 ticks (a day) of a healthy service that nobody polls: one look at the shared
    report every 5 minutes, a report of its own every 20."""
    from app.health import checks
    from app.timeutil import iso_from_epoch

    def on_the_test_clock() -> dict:  # the checks for real, stamped with the injected time
        return {**checks.run_checks(alerting), "timestamp": iso_from_epoch(clock())}

    watcher = Alerts(alerting, compute=on_the_test_clock, clock=clock)
    watcher.tick()
    alerting.redis.config_resetstat()
    for _ in range(1440):
        clock.advance(60)
        watcher.tick()
    per_day = command_calls(alerting.redis)
    print(f"alert evaluation, idle day without health polls: {per_day} Redis commands")
    # GETs of the shared report, and per report of its own: health's ~19, its SET, a state GET
    assert per_day <= 288 + 72 * 22


def test_without_alert_settings_the_job_asks_redis_nothing(services):
    assert not alerts.configured(services.settings)
    services.redis.config_resetstat()
    tasks.alerts(None, True)
    assert command_calls(services.redis) == 0


def test_alert_test_command_says_which_channel_took_it(hook, resend_server, services):
    env = {**os.environ, **TEST_ENV, "SEATWATCH_ALERT_EMAIL": OPS,
           "SEATWATCH_ALERT_URLS": f"{hook.url}/hook, http://127.0.0.1:{closed_port()}/x"}
    cp = subprocess.run([sys.executable, "-m", "app", "alert", "test"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1, cp.stderr
    lines = cp.stdout.strip().splitlines()
    assert lines[0] == "ok     email to 1 address(es)"
    assert lines[1] == f"ok     http://127.0.0.1:{hook.port}"
    assert lines[2].startswith("FAILED http://127.0.0.1:") and lines[2].endswith(": ConnectionError")
    [posted] = events(hook)
    assert posted["event"] == "test" and posted["failing"] == []
    assert "test alert" in resend_server.to(OPS)[0]["subject"]

    env["SEATWATCH_ALERT_URLS"] = f"{hook.url}/hook"
    cp = subprocess.run([sys.executable, "-m", "app", "alert", "test"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "FAILED" not in cp.stdout


@pytest.mark.parametrize("name, value, message", [
    ("SEATWATCH_ALERT_EMAIL", "ops-at-example", "SEATWATCH_ALERT_EMAIL must be email addresses"),
    ("SEATWATCH_ALERT_URLS", "hooks.example/secret-token", "SEATWATCH_ALERT_URLS must be URLs"),
    ("SEATWATCH_ALERT_URLS", "ntfy://secret-topic", "need Apprise"),
    ("SEATWATCH_ALERT_AFTER_SECONDS", "ten", "SEATWATCH_ALERT_AFTER_SECONDS must be a number"),
    ("SEATWATCH_ALERT_AFTER_SECONDS", "-5", "SEATWATCH_ALERT_AFTER_SECONDS must be in"),
    ("SEATWATCH_PING_URL", "hc-ping.example/secret-uuid", "SEATWATCH_PING_URL must start with"),
])
def test_bad_alert_settings_name_the_variable_not_the_value(name, value, message, monkeypatch):
    # Apprise is in the test extras (its channel is tested below); a server without it must refuse.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda mod, *a: None if mod == "apprise" else real_find_spec(mod, *a))
    with pytest.raises(SettingsError, match=message) as err:
        Settings.from_env({**TEST_ENV, name: value})
    assert value not in str(err.value) and name.split("_")[1] in str(err.value)


def test_alert_settings_are_parsed_and_their_urls_are_secrets():
    s = Settings.from_env({**TEST_ENV, "SEATWATCH_ALERT_EMAIL": "a@x.test, b@x.test",
                           "SEATWATCH_ALERT_URLS": "https://h.test/t1 https://h.test/t2,https://h.test/t3",
                           "SEATWATCH_PING_URL": "https://hc.test/uuid-1/"})
    assert s.alert_emails == ("a@x.test", "b@x.test") and len(s.alert_urls) == 3
    assert s.alert_after == 600.0 and s.ping_url == "https://hc.test/uuid-1"
    assert "t2" not in repr(s) and "uuid-1" not in repr(s)
    assert s.redact("posting to https://h.test/t2 failed") == "posting to *** failed"
    assert json.dumps(alerts.counts.__doc__)  # the module imports without Apprise installed


def test_other_schemes_go_through_apprise_when_it_is_installed(hook):
    """Apprise's own `json://` URL posts to the capture server (Apprise is in requirements.lock;
    tests/test_alert_channels.py sends from a venv of the lock alone)."""
    from app.alerting import notify

    settings = Settings.from_env({**TEST_ENV, "SEATWATCH_ALERT_URLS": f"json://127.0.0.1:{hook.port}/apprise"})
    [channel] = notify.channels(settings)
    assert channel.kind == "apprise"
    [result] = alerts.send_test(settings)
    assert result["ok"], result
    [got] = hook.to("/apprise")
    assert "test alert" in json.dumps(got["json"])
