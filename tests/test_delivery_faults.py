"""Emails on bad days: a bad sender, refusals, an outage across open -> fill -> reopen, a flapping
scraper, the 23-hour give-up. Against the Resend stand-in (tests/fakes.FakeResend) with the real
SDK, real PostgreSQL and Redis. Each test counts what reached the stand-in's inbox and what health
and `python -m app status` say while it lasts.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import resend

from app.check.run import check_section
from app.health import checks
from app.health.view import public_view
from app.mail import delivery
from app.mail.mailer import Mailer
from tests.deadends import closed_port
from tests.fakes import RESEND_KEY

TERM, NBR = "2261", "12430"
BAD_SENDER = "PickMyClass alerts@pickmyclass.app"  # no angle brackets: Resend refuses it


@pytest.fixture
def use_mailer(services, monkeypatch):
    """Point the service's mailer at a URL (a closed port: Resend unreachable), no backoff sleeps.
    The SDK keeps its URL in module globals: they are restored after the test."""
    services.mailer  # the default mailer exists before its globals are saved
    for name in ("api_url", "api_key", "default_http_client"):
        monkeypatch.setattr(resend, name, getattr(resend, name))

    def point(url: str) -> Mailer:
        mailer = Mailer(RESEND_KEY, url, sleep=lambda s: None)
        monkeypatch.setattr(services, "mailer", mailer)
        return mailer

    return point


def run_check(services, nbr=NBR, **section):
    from tests.conftest import SCRAPER

    SCRAPER.set_section(TERM, nbr, **section)
    return check_section(services, TERM, nbr)


def deliveries(services) -> dict:
    return checks.run_checks(services)["checks"]["deliveries"]


def later(minutes: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=minutes)


def status(*flags: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "app", "status", *flags], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr  # 1: not healthy (no scheduler beats in these tests)
    return proc.stdout


def test_permissive_batch_with_every_email_refused_is_failed_and_loud(
        services, resend_server, make_watch, sql):
    make_watch("not an address", NBR)
    make_watch("also not@", NBR)
    run_check(services, seats_available=0)
    result = run_check(services, seats_available=2)
    assert result.claimed == 2 and result.delivered == 0 and resend_server.emails == []
    [batch] = sql("select outcome, delivered_at, failed_at from delivery_batches")
    assert batch["outcome"] == "failed" and batch["delivered_at"] is None and batch["failed_at"]
    rows = sql("select outcome, last_error from notification_deliveries")
    assert [r["outcome"] for r in rows] == ["refused", "refused"]
    assert all("Invalid `to` field" in r["last_error"] for r in rows)
    report = checks.run_checks(services)
    d = report["checks"]["deliveries"]
    assert d["status"] == checks.DEGRADED and d["failed"] == 2
    assert d["last_24h"] == {"refused": 2}
    assert "2 refused" in d["reason"] and "Invalid `to` field" in d["reason"]
    assert public_view(report)["checks"]["deliveries"] == {"status": checks.DEGRADED}
    listed = json.loads(status("--json"))["deliveries"]
    assert listed["last_24h"] == {"refused": 2} and listed["reasons"][0]["count"] == 2
    assert "Invalid `to` field" in listed["reasons"][0]["reason"]
    table = status()
    assert "2 not delivered in the last 24 h" in table
    [line] = [x for x in table.splitlines() if "Invalid `to` field" in x]
    assert line.split()[:2] == ["2", "refused"]


@pytest.mark.parametrize("answer", ["per_email", "batch"])
def test_refused_sender_keeps_the_emails_until_the_setting_is_fixed(
        services, resend_server, make_watch, sql, monkeypatch, answer):
    """A sender Resend refuses (as a release without start-up validation stored it), whether
    Resend refuses each email's `from` or the whole batch with 422 invalid_from_address: nothing
    is lost, health says why, and once the setting is fixed each watcher gets exactly one email."""
    resend_server.sender_errors = answer
    good = services.settings
    monkeypatch.setattr(services, "settings", dataclasses.replace(good, notification_from_email=BAD_SENDER))
    make_watch("a@asu.edu", NBR)
    make_watch("b@asu.edu", NBR)
    run_check(services, seats_available=0)
    assert run_check(services, seats_available=2).delivered == 0
    assert resend_server.emails == []
    [batch] = sql("select outcome, delivered_at, failed_at, last_status from delivery_batches")
    assert batch["outcome"] is None and batch["delivered_at"] is None and batch["failed_at"] is None
    assert batch["last_status"] == 422
    d = deliveries(services)
    assert d["status"] == checks.DEGRADED and d["pending"] == 2
    assert "`from`" in d["reason"] and "NOTIFICATION_FROM_EMAIL" in d["reason"]
    # Still refused: retried (with backoff), still nothing lost.
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 0
    assert delivery.sweep(services, grace_seconds=0, now=later(3))["batches"] == 0  # backing off (5 min)
    # The operator fixes the setting (a restart with the new value).
    monkeypatch.setattr(services, "settings", good)
    assert delivery.sweep(services, grace_seconds=0, now=later(90))["delivered"] == 2
    assert sorted(e["to"][0] for e in resend_server.emails) == ["a@asu.edu", "b@asu.edu"]
    assert {e["from"] for e in resend_server.emails} == {good.notification_from_email}
    assert delivery.sweep(services, grace_seconds=0, now=later(600)) == {"batches": 0, "delivered": 0}
    assert len(resend_server.emails) == 2
    after = deliveries(services)
    assert after["status"] == checks.HEALTHY and after["pending"] == 0 and after["failed"] == 0


def test_outage_across_open_fill_reopen_sends_one_current_email_each(
        services, resend_server, make_watch, use_mailer, sql):
    make_watch("a@asu.edu", NBR)
    make_watch("b@asu.edu", NBR)
    run_check(services, seats_available=0)
    use_mailer(f"http://127.0.0.1:{closed_port()}")  # Resend unreachable
    assert run_check(services, seats_available=2).delivered == 0
    assert run_check(services, seats_available=0).changes == ["seats_filled"]
    # The first batch lost its claims; it is still counted, whatever happened to them.
    assert deliveries(services)["pending"] == 2
    assert run_check(services, seats_available=3).claimed == 2
    assert deliveries(services)["pending"] == 4
    use_mailer(resend_server.url)  # Resend is back
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 2
    inbox = sorted(e["to"][0] for e in resend_server.emails)
    assert inbox == ["a@asu.edu", "b@asu.edu"]
    for email in resend_server.emails:
        assert "3 open seats available" in email["text"]
    outcomes = sql("select outcome, count(*) as n from delivery_batches group by 1 order by 1")
    assert outcomes == [{"outcome": "cancelled", "n": 1}, {"outcome": "delivered", "n": 1}]
    assert deliveries(services) == {"status": checks.HEALTHY, "pending": 0, "overdue": 0, "failed": 0}


def test_a_retried_batch_carries_the_current_figure(services, resend_server, make_watch, use_mailer):
    """Resend unreachable at the opening (2 seats), 4 seats by the time it is back: the email
    that goes says 4, once."""
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    use_mailer(f"http://127.0.0.1:{closed_port()}")
    run_check(services, seats_available=2)
    assert run_check(services, seats_available=4).changes == []
    use_mailer(resend_server.url)
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 1
    [email] = resend_server.emails
    assert "4 open seats available" in email["text"]


def test_flapping_non_reserved_count_with_seats_unchanged_emails_at_most_once(
        services, resend_server, make_watch):
    make_watch("a@asu.edu", NBR)
    make_watch("b@asu.edu", NBR)
    for non_reserved in (0, None, 0, None, 0, None):
        run_check(services, seats_available=5, non_reserved_seats=non_reserved)
    for watcher in ("a@asu.edu", "b@asu.edu"):
        assert len(resend_server.to(watcher)) <= 1


def test_give_up_is_unknown_when_resend_may_have_sent_it(services, resend_server, make_watch, sql):
    services.mailer.sleep = lambda s: None
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    resend_server.lose_next_answers(1)  # accepted, but the answer is lost
    resend_server.fail_next(3, status=502)
    assert run_check(services, seats_available=1).delivered == 0
    assert len(resend_server.emails) == 1
    # No sweep got through for 23 hours (a resend now would replay; by then Resend may forget).
    sql("update delivery_batches set created_at = now() - interval '23 hours 30 minutes'")
    delivery.sweep(services, grace_seconds=0)
    [batch] = sql("select outcome, failed_at from delivery_batches")
    assert batch["outcome"] == "unknown" and batch["failed_at"]
    [row] = sql("select outcome, last_error from notification_deliveries")
    assert row["outcome"] == "unknown" and "may have" in row["last_error"]
    d = deliveries(services)
    assert d["status"] == checks.DEGRADED and d["last_24h"] == {"unknown": 1}
    assert len(resend_server.emails) == 1


def test_give_up_is_failed_when_no_send_was_accepted(services, resend_server, make_watch, sql, use_mailer):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    use_mailer(f"http://127.0.0.1:{closed_port()}")
    run_check(services, seats_available=1)
    sql("update delivery_batches set created_at = now() - interval '23 hours 30 minutes'")
    delivery.sweep(services, grace_seconds=0)
    [batch] = sql("select outcome from delivery_batches")
    assert batch["outcome"] == "failed"
    assert deliveries(services)["last_24h"] == {"failed": 1}


def test_a_sweep_killed_mid_request_leaves_the_batch_to_be_resent_not_rebuilt(
        services, resend_server, make_watch, use_mailer, sql):
    """The retry of a never-accepted batch is SIGKILLed while Resend holds its request, which
    Resend then sends. The next sweep must not rebuild it under a new key: Resend replays, and the
    student has one email."""
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    use_mailer(f"http://127.0.0.1:{closed_port()}")
    run_check(services, seats_available=2)  # attempt 1: never connected, certain
    use_mailer(resend_server.url)
    resend_server.hang_next(1, 3.0, outcome="send")
    proc = subprocess.Popen([sys.executable, "-m", "app", "sweep"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not resend_server._in_flight and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert resend_server._in_flight, "the sweep never reached Resend"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    while resend_server._in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(resend_server.emails) == 1  # Resend did send it; nobody heard
    run_check(services, seats_available=5)  # the figure moved meanwhile: a rebuild would differ
    # What a kill leaves lapses on its own: the batch's lease (5 min), the sweep lock (15 min).
    sql("update delivery_batches set lease_until = now() - interval '1 second'")
    services.redis.delete(services.keys.sweep_lock)
    assert delivery.sweep(services, grace_seconds=0, now=later(90))["delivered"] == 1
    assert len(resend_server.emails) == 1 and len({r["key"] for r in resend_server.requests}) == 1
    assert sql("select outcome from delivery_batches") == [{"outcome": "delivered"}]


def test_a_retry_goes_to_the_watchers_as_they_are_now(services, resend_server, make_watch, use_mailer, sql):
    """Resend unreachable at the opening; meanwhile one student turns notifications off and another
    changes address. The retry is re-checked: no email to the first, the new address for the other."""
    quiet, _ = make_watch("quiet@asu.edu", NBR)
    moved, _ = make_watch("old@asu.edu", NBR)
    run_check(services, seats_available=0)
    use_mailer(f"http://127.0.0.1:{closed_port()}")
    run_check(services, seats_available=2)
    sql("insert into user_profiles (user_id, notifications_enabled) values (%s, false)", (quiet,))
    sql("update auth.users set email = 'new@asu.edu' where id = %s", (moved,))
    use_mailer(resend_server.url)
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 1
    assert [e["to"] for e in resend_server.emails] == [["new@asu.edu"]]
    rows = sql("select recipient, outcome, last_error from notification_deliveries order by recipient")
    assert [(r["recipient"], r["outcome"]) for r in rows] == [("new@asu.edu", "delivered"),
                                                               ("quiet@asu.edu", "cancelled")]
    assert "no longer eligible" in rows[1]["last_error"]
    assert deliveries(services)["status"] == checks.HEALTHY
