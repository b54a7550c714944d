"""No stale email after a Resend outage answered with 5xx (issue 26). A batch whose answer was a
5xx may have been accepted, so it keeps its key; but once its news is no longer true it is
cancelled (at most the one Resend may have accepted went out, and it was true then), and once it
changed it is rebuilt under the same key (Resend answers 409 `invalid_idempotent_request` if it
had accepted the old bytes: then it was delivered). The real check, sweep, resend SDK and the
Resend stand-in; real PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from app.check.run import check_section
from app.mail import delivery

TERM, NBR = "2261", "12430"


def run_check(services, **section):
    from tests.conftest import SCRAPER

    SCRAPER.set_section(TERM, NBR, **section)
    return check_section(services, TERM, NBR)


@pytest.fixture
def no_sleep(services, monkeypatch):
    monkeypatch.setattr(services.mailer, "sleep", lambda s: None)


def sweep(services):
    return delivery.sweep(services, grace_seconds=0, force=True)


def test_open_fill_reopen_during_a_503_outage_sends_only_the_current_opening(
        services, resend_server, make_watch, sql, no_sleep):
    make_watch("a@asu.edu", NBR)
    make_watch("b@asu.edu", NBR)
    run_check(services, seats_available=0)
    resend_server.fail_next(100, status=503)  # Resend down
    assert run_check(services, seats_available=2).delivered == 0  # opens: "2 seats", unanswered
    run_check(services, seats_available=0)  # fills
    assert run_check(services, seats_available=3).delivered == 0  # reopens: "3 seats"
    # The failure is visible while it lasts: two open batches, in doubt.
    assert sql("select count(*) as n from delivery_batches where outcome is null "
               "and maybe_sent_at is not null") == [{"n": 2}]
    resend_server.reset()  # Resend is back
    sweep(services)
    for watcher in ("a@asu.edu", "b@asu.edu"):
        [email] = resend_server.to(watcher)
        assert "3 open seats available" in email["text"]
    outcomes = sql("select outcome, count(*) as n from delivery_batches group by outcome order by outcome")
    assert outcomes == [{"outcome": "cancelled", "n": 1}, {"outcome": "delivered", "n": 1}]
    sweep(services)
    assert len(resend_server.emails) == 2


def test_an_opening_accepted_despite_a_5xx_is_not_sent_again_after_fill_and_reopen(
        services, resend_server, make_watch, sql, no_sleep):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    resend_server.lose_next_answers(1)  # accepted, the answer lost: a 500
    resend_server.fail_next(3, status=502)
    run_check(services, seats_available=2)
    run_check(services, seats_available=0)
    run_check(services, seats_available=3)
    sweep(services)
    # Two true openings, one email each: "2 seats" (true when Resend took it) and "3 seats".
    texts = [e["text"] for e in resend_server.to("a@asu.edu")]
    assert len(texts) == 2 and "2 open seats" in texts[0] and "3 open seats" in texts[1]
    sweep(services)
    assert len(resend_server.emails) == 2


def test_a_doubted_batch_still_true_goes_with_the_current_figure_once(
        services, resend_server, make_watch, sql, no_sleep):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    resend_server.fail_next(4, status=503)  # never accepted
    run_check(services, seats_available=2)
    run_check(services, seats_available=4)  # still open, another figure
    sweep(services)
    [email] = resend_server.to("a@asu.edu")
    assert "4 open seats available" in email["text"]
    assert sql("select outcome from delivery_batches") == [{"outcome": "delivered"}]


def test_a_doubted_batch_that_resend_had_accepted_is_recorded_delivered_not_resent(
        services, resend_server, make_watch, sql, no_sleep):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0)
    resend_server.lose_next_answers(1)
    resend_server.fail_next(3, status=502)
    run_check(services, seats_available=2)  # "2 seats" accepted, its answer lost
    run_check(services, seats_available=4)
    sweep(services)  # rebuilt "4 seats" under the same key: Resend answers 409, it had the first
    [email] = resend_server.to("a@asu.edu")
    assert "2 open seats available" in email["text"]
    assert sql("select outcome from delivery_batches") == [{"outcome": "delivered"}]
    assert sql("select outcome from notification_deliveries") == [{"outcome": "delivered"}]


def test_the_recheck_judges_on_the_basis_detection_used(services, resend_server, make_watch, no_sleep):
    """An opening of 2 non-reserved seats (of 5) while Resend rate-limits us (429: not sent, so the
    retry is rebuilt from the stored state); then the scraper cannot read the reservation table.
    The retry says 2 open seats, the count detection used, not the 5 seats available (most of
    them reserved)."""
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=5, non_reserved_seats=0)
    resend_server.fail_next(4, status=429, headers={"retry-after": "0"})
    assert run_check(services, seats_available=5, non_reserved_seats=2).changes == ["seat_available"]
    assert run_check(services, seats_available=5, non_reserved_seats=None).changes == []
    resend_server.reset()
    sweep(services)
    [email] = resend_server.to("a@asu.edu")
    assert "2 open seats available" in email["text"] and "5 open seats" not in email["text"]
