"""Failures the worker lives through reach the operator within SEATWATCH_ALERT_AFTER_SECONDS + 60 s:
the real `python -m app worker`, the real breaker opened by its own checks against a failing scraper
stand-in, the alert on a JSON webhook capture server and the Resend stand-in (issue 27)."""

from __future__ import annotations

import time

from app import tasks
from app.alerting import alerts
from app.alerting.alerts import Alerts
from tests.capture import CaptureServer
from tests.test_alerts import command_calls
from tests.test_worker import start_worker, wait_for  # noqa: F401  (a fixture, and its helper)

import pytest

TERM = "2261"
OPS = "ops@example.test"
AFTER = 20


@pytest.fixture
def hook():
    with CaptureServer() as server:
        yield server


def events(hook) -> list[dict]:
    return [r["json"] for r in hook.to("/hook")]


def test_the_breaker_opened_by_the_workers_own_checks_alerts_within_the_bound(
        start_worker, services, scraper, resend_server, hook, make_watch):
    nbrs = [f"124{i:02d}" for i in range(0, 24, 2)]  # 12 even sections: more than the 10 to open
    for nbr in nbrs:
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)
    services.heartbeat.beat()
    worker = start_worker(SEATWATCH_ALERT_URLS=hook.url + "/hook", SEATWATCH_ALERT_EMAIL=OPS,
                          SEATWATCH_ALERT_AFTER_SECONDS=str(AFTER))
    # Its first look finds all healthy: from now on it polls every 5 minutes at most.
    wait_for(lambda: "evaluated_at" in alerts.load_state(services.redis, services.keys)
             or worker.output().count("alert") == 0, 10, "the worker's first look", step=0.5)
    time.sleep(2)
    scraper.fail_next(100_000, status=500)
    failed_at = time.monotonic()
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == len(nbrs)
    wait_for(lambda: services.breaker.status()["state"] == "open", 30, "the breaker to open")
    wait_for(lambda: events(hook) and resend_server.to(OPS), AFTER + 60 + 5,
             "the alert on the webhook and by email")
    took = time.monotonic() - failed_at
    print(f"alert on both channels {took:.1f} s after the scraper started failing")
    assert took <= AFTER + 60, took
    [alert] = events(hook)
    assert alert["event"] == "alert" and "circuit_breaker" in alert["failing"]
    [email] = resend_server.to(OPS)
    assert "circuit_breaker" in email["text"]
    assert alerts.load_state(services.redis, services.keys)["open"]  # visible while it lasts
    # each check the scraper failed is one line with its reason, never huey's traceback
    output = worker.output()
    assert "Traceback" not in output, output[-3000:]
    assert "CheckFailed: scraper:" in output


def test_without_alert_settings_a_nudge_asks_redis_nothing(services, monkeypatch):
    """The hook where a failure happens only starts the follow-up; without alert settings nothing."""
    assert not alerts.configured(services.settings)
    services.redis.config_resetstat()
    tasks._alert_nudge()
    tasks._alert_nudge(lived="cron_run", reason="cron run failed: X")
    assert command_calls(services.redis) == 0
    assert tasks._alerts is None


def test_a_cron_run_that_raised_is_alerted_and_ends_with_the_next_good_run(
        services, hook, resend_server, monkeypatch):
    import dataclasses

    settings = dataclasses.replace(services.settings, alert_urls=(hook.url + "/hook",),
                                   alert_after=0.0)
    monkeypatch.setattr(services, "settings", settings)
    services.heartbeat.beat()
    watcher = Alerts(services)
    watcher.nudge(lived="cron_run", reason="cron run failed: OperationalError")
    wait_for(lambda: events(hook), 30, "the alert of the failed cron run")
    [alert] = events(hook)
    assert alert["failing"] == ["cron_run"] and "OperationalError" in alert["summary"]
    assert watcher.lived("cron_run")
    watcher.nudge(lived="cron_run", reason=None)  # the next run went well
    wait_for(lambda: len(events(hook)) == 2, 30, "the recovery")
    assert events(hook)[1]["event"] == "recovered"


def test_the_recovered_duration_is_measured_from_the_incidents_start():
    from app.alerting import incident

    failing = {"status": "degraded", "checks": {"redis": {"status": "unhealthy", "reason": "x"}}}
    healthy = {"status": "healthy", "checks": {"redis": {"status": "healthy"}}}
    state: dict = {}
    start = 1_000_000.0
    assert incident.step(state, failing, start, 60, service="s", host="h") == []
    [alert] = incident.step(state, failing, start + 60, 60, service="s", host="h")
    [recovered] = incident.step(state, healthy, start + 360, 60, service="s", host="h")
    assert recovered["event"] == "recovered" and "after 6 min" in recovered["summary"]


@pytest.fixture
def nudges(services, monkeypatch):
    """Alert settings on, and what each failure's nudge said (the follow-up itself is tested above)."""
    import dataclasses

    from app.queue.instance import huey

    settings = dataclasses.replace(services.settings, alert_urls=("http://127.0.0.1:9/hook",))
    monkeypatch.setattr(services, "settings", settings)
    said: list = []
    monkeypatch.setattr(Alerts, "nudge", lambda self, lived=None, reason=None: said.append(lived))
    monkeypatch.setattr(tasks, "_alerts", None)
    huey.storage.flush_all()
    yield said
    huey.storage.flush_all()


def run_queued() -> None:
    from app.queue.instance import huey

    while huey.pending_count():
        task = huey.dequeue()
        task.retries = 0  # its last attempt: a failure dead-letters
        huey.execute(task)


def test_a_dead_letter_and_a_refused_email_nudge_the_alerts(nudges, services, scraper,
                                                            resend_server, make_watch):
    make_watch("a@asu.edu", "12430")
    make_watch("b@asu.edu", "12432")
    scraper.set_section(TERM, "12430", seats_available=0)  # 12432 unknown: fails, dead-lettered
    tasks.enqueue_checks([(TERM, "12430"), (TERM, "12432")])
    run_queued()
    assert any(d["class_nbr"] == "12432" for d in services.dead_letters.list())
    assert len(nudges) >= 2  # the failed attempt and its dead letter
    nudges.clear()

    scraper.set_section(TERM, "12430", seats_available=3)  # a seat opens: an email is owed
    resend_server.fail_next(10, status=422, body={"message": "invalid to", "name": "validation_error"})
    tasks.enqueue_checks([(TERM, "12430")])
    run_queued()
    assert nudges, "an email not delivered at its check nudges the alerts"


def test_a_healthy_check_nudges_nothing(nudges, scraper, make_watch):
    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=0)
    tasks.enqueue_checks([(TERM, "12430")])
    run_queued()
    assert nudges == []
