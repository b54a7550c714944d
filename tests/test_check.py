"""A section check end to end: stand-in scraper and Resend, real Redis and PostgreSQL."""

from __future__ import annotations

import pytest

from app.check.breaker import BreakerOpen
from app.check.run import CheckFailed, check_section
from app.mail import delivery
from app.mail.unsubscribe import verify_token

TERM, NBR = "2261", "12430"


def run_check(services, nbr=NBR):
    return check_section(services, TERM, nbr)


def test_first_sighting_only_records_a_baseline(services, scraper, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=5)
    result = run_check(services)
    assert result.baseline and result.changes == [] and result.claimed == 0
    assert resend_server.emails == []
    state = sql("select seats_available, instructor_name from class_states where class_nbr = %s", (NBR,))
    assert state == [{"seats_available": 5, "instructor_name": "Staff"}]


def test_seat_opening_emails_every_watcher_once(services, scraper, resend_server, make_watch, sql):
    (u1, _), (u2, _) = make_watch("a@asu.edu", NBR), make_watch("b@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    scraper.set_section(TERM, NBR, seats_available=3)
    result = run_check(services)
    assert result.changes == ["seat_available"] and result.claimed == 2 and result.delivered == 2
    assert sorted(e["to"][0] for e in resend_server.emails) == ["a@asu.edu", "b@asu.edu"]
    email = resend_server.to("a@asu.edu")[0]
    assert email["subject"] == "🎉 Seat Available: CSE 110 (12430)"
    assert "https://pickmyclass.example/go/asu?classNbr=12430&amp;term=2261" in email["html"]
    assert "https://pickmyclass.example/go/asu?classNbr=12430&term=2261" in email["text"]
    assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = email["headers"]["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://pickmyclass.example/api/unsubscribe?token=")
    token = unsubscribe.split("token=", 1)[1].rstrip(">")
    assert verify_token(token, services.settings.unsubscribe_secret) == u1
    # The same check again: seats still open, nothing new to say.
    again = run_check(services)
    assert again.changes == [] and len(resend_server.emails) == 2
    delivered = sql("select count(*) as n from notification_deliveries where delivered_at is not null")
    assert delivered == [{"n": 2}]


def test_instructor_named_emails_watchers(services, scraper, resend_server, make_watch):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0, instructor="Staff")
    run_check(services)
    scraper.set_section(TERM, NBR, seats_available=0, instructor="Ada Lovelace")
    result = run_check(services)
    assert result.changes == ["instructor_assigned"]
    [email] = resend_server.emails
    assert email["subject"] == "👨‍🏫 Instructor Assigned: CSE 110 (12430)"
    assert "Ada Lovelace" in email["text"]


def test_non_reserved_seats_decide_when_known(services, scraper, resend_server, make_watch):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=4, non_reserved_seats=0)
    run_check(services)
    # Reserved seats only: still nothing a watcher can take.
    scraper.set_section(TERM, NBR, seats_available=6, non_reserved_seats=0)
    assert run_check(services).changes == []
    scraper.set_section(TERM, NBR, seats_available=6, non_reserved_seats=2)
    assert run_check(services).changes == ["seat_available"]
    assert len(resend_server.emails) == 1


def test_filled_then_reopened_notifies_again(services, scraper, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    for seats in (0, 2):
        scraper.set_section(TERM, NBR, seats_available=seats)
        run_check(services)
    assert len(resend_server.emails) == 1
    scraper.set_section(TERM, NBR, seats_available=0)
    assert run_check(services).changes == ["seats_filled"]
    assert sql("select count(*) as n from notifications_sent") == [{"n": 0}]
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 1
    assert len(resend_server.emails) == 2


def test_ineligible_watchers_are_skipped(services, scraper, resend_server, make_watch):
    make_watch("ok@asu.edu", NBR)
    make_watch("noprofile-but-fine@asu.edu", NBR)
    make_watch("off@asu.edu", NBR, profile={"notifications_enabled": False})
    make_watch("bounced@asu.edu", NBR, profile={"email_bounced": True})
    make_watch("spam@asu.edu", NBR, profile={"spam_complained": True})
    make_watch("disabled@asu.edu", NBR, profile={"is_disabled": True})
    make_watch("profile-default@asu.edu", NBR, profile={})
    make_watch("other-section@asu.edu", "12432")
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    scraper.set_section(TERM, NBR, seats_available=1)
    run_check(services)
    assert sorted(e["to"][0] for e in resend_server.emails) == [
        "noprofile-but-fine@asu.edu", "ok@asu.edu", "profile-default@asu.edu"]


def test_resend_500_then_success_delivers_exactly_once(services, scraper, resend_server, make_watch, monkeypatch):
    monkeypatch.setattr(services.mailer, "sleep", lambda s: None)
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.fail_next(2, status=500)
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 1
    assert len(resend_server.emails) == 1
    assert [r["key"] for r in resend_server.requests][0] == resend_server.requests[-1]["key"]


def test_429_honours_retry_after(services, scraper, resend_server, make_watch, monkeypatch):
    slept = []
    monkeypatch.setattr(services.mailer, "sleep", slept.append)
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.fail_next(1, status=429, headers={"retry-after": "7"},
                            body={"statusCode": 429, "name": "rate_limit_exceeded", "message": "slow down"})
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 1
    assert slept == [7.0]


def test_lost_answer_is_not_a_duplicate(services, scraper, resend_server, make_watch, monkeypatch):
    """Resend accepted the batch but the answer was lost: the retry replays, nothing is sent twice."""
    monkeypatch.setattr(services.mailer, "sleep", lambda s: None)
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.lose_next_answers(1)
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 1
    assert len(resend_server.emails) == 1 and len(resend_server.requests) == 2


def test_undelivered_claim_is_delivered_by_the_sweep_exactly_once(
        services, scraper, resend_server, make_watch, monkeypatch, sql):
    monkeypatch.setattr(services.mailer, "sleep", lambda s: None)
    make_watch("a@asu.edu", NBR)
    make_watch("b@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.fail_next(4, status=503)  # every attempt of the check's own send fails
    scraper.set_section(TERM, NBR, seats_available=1)
    result = run_check(services)
    assert result.claimed == 2 and result.delivered == 0 and resend_server.emails == []
    pending = sql("select attempts, last_error from notification_deliveries where delivered_at is null")
    assert len(pending) == 2 and all("503" in r["last_error"] for r in pending)
    # A later check claims nothing new: the claims are live, so there is no second email.
    assert run_check(services).claimed == 0
    assert delivery.sweep(services, grace_seconds=0) == {"batches": 1, "delivered": 2}
    assert delivery.sweep(services, grace_seconds=0) == {"batches": 0, "delivered": 0}
    assert sorted(e["to"][0] for e in resend_server.emails) == ["a@asu.edu", "b@asu.edu"]


def test_sweep_after_lost_answer_replays_same_key_and_payload(
        services, scraper, resend_server, make_watch, monkeypatch, sql):
    """Worker died after Resend accepted: the sweep's resend must match key and payload (no 409)."""
    monkeypatch.setattr(services.mailer, "sleep", lambda s: None)
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.lose_next_answers(1)
    resend_server.fail_next(3, status=502)  # the check's retries never see an answer
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 0
    assert len(resend_server.emails) == 1  # it did go out once
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 1
    assert len(resend_server.emails) == 1  # and the sweep did not send it again
    assert sql("select count(*) as n from notification_deliveries where delivered_at is null") == [{"n": 0}]


def test_permanent_resend_error_is_recorded_not_retried(services, scraper, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    resend_server.fail_next(1, status=422, body={"statusCode": 422, "name": "validation_error",
                                                  "message": "Invalid `to` field"})
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 0
    assert len(resend_server.requests) == 1
    [row] = sql("select failed_at, last_error from notification_deliveries")
    assert row["failed_at"] is not None and "422" in row["last_error"]
    assert delivery.sweep(services, grace_seconds=0) == {"batches": 0, "delivered": 0}


def test_more_than_100_watchers_go_in_batches(services, scraper, resend_server, make_watch):
    for i in range(130):
        make_watch(f"s{i}@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    run_check(services)
    scraper.set_section(TERM, NBR, seats_available=1)
    assert run_check(services).delivered == 130
    assert [r["count"] for r in resend_server.requests] == [100, 30]
    assert len({r["key"] for r in resend_server.requests}) == 2
    assert len({e["to"][0] for e in resend_server.emails}) == 130


def test_scraper_failure_fails_the_check_and_counts_on_the_breaker(services, scraper, sql):
    scraper.fail_next(1, status=500)
    scraper.set_section(TERM, NBR, seats_available=1)
    with pytest.raises(CheckFailed, match="HTTP 500"):
        run_check(services)
    assert services.breaker.status()["failure_count"] == 1
    assert sql("select count(*) as n from class_states") == [{"n": 0}]
    run_check(services)
    assert services.breaker.status()["failure_count"] == 0


def test_open_breaker_refuses_without_calling_the_scraper(services, scraper):
    scraper.set_section(TERM, NBR, seats_available=1)
    for _ in range(10):
        services.breaker.record_failure()
    with pytest.raises(BreakerOpen) as refused:
        run_check(services)
    assert scraper.calls == [] and 0 < refused.value.retry_in <= 120


@pytest.mark.parametrize("before, after, expected", [
    ((5, 0), (5, None), []),            # the reservation table unreadable: the last count carries
    ((0, 0), (5, None), []),            # ... so an unknown count is never an opening by itself
    ((5, None), (5, 0), ["seats_filled"]),    # the site counts 0 non-reserved seats as closed
    ((0, None), (3, 0), []),            # all reserved: not an opening (issue 26's regression)
    ((0, None), (3, None), ["seat_available"]),  # no count ever: seats available decide
    ((4, 0), (4, 2), ["seat_available"]),     # both known: non-reserved seats decide
    ((4, 2), (4, 0), ["seats_filled"]),
    ((3, None), (0, 0), ["seats_filled"]),
    ((3, 2), (0, None), ["seats_filled"]),   # no seats at all: none of them non-reserved
])
def test_two_states_are_compared_on_the_same_basis(before, after, expected):
    from app.check.changes import carried, detect
    from app.section import SectionInfo

    previous = {"seats_available": before[0], "non_reserved_seats": before[1], "instructor_name": "Staff"}
    current = SectionInfo("CSE", "110", "t", "Staff", after[0], 10, after[1], "", "")
    assert [c.value for c in detect(previous, carried(previous, current))] == expected
