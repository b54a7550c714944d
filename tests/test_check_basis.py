"""Seats and instructors on the site's basis (issue 26): open seats are the non-reserved count
whenever the scrape has one, an unknown count or an unreadable instructor never makes news by
itself, and a name already announced to a watch is not announced again. Real worker check
(app.check.run), the scraper and Resend stand-ins, real PostgreSQL and Redis."""

from __future__ import annotations

from app.check.run import check_section

TERM, NBR = "2261", "12430"


def run_check(services, **section):
    from tests.conftest import SCRAPER

    SCRAPER.set_section(TERM, NBR, **section)
    return check_section(services, TERM, NBR)


# --- seats -------------------------------------------------------------------------------------

def test_all_reserved_seats_after_an_unknown_count_are_not_an_opening(services, resend_server, make_watch):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0, non_reserved_seats=None)
    # 5 seats, every one reserved: the site counts 0 open seats, so nobody is told.
    result = run_check(services, seats_available=5, non_reserved_seats=0)
    assert result.changes == [] and result.open_seats == 0
    assert resend_server.emails == []
    # A real opening after that still emails, once.
    assert run_check(services, seats_available=5, non_reserved_seats=2).changes == ["seat_available"]
    assert len(resend_server.to("a@asu.edu")) == 1


def test_an_unknown_count_carries_the_last_known_basis(services, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=5, non_reserved_seats=0)
    for nrs in (None, 0, None, None, 0):  # the scraper cannot always read the reservation table
        assert run_check(services, seats_available=5, non_reserved_seats=nrs).changes == []
    assert resend_server.emails == []
    # Kept, and shown on the site's dashboard, as the last known count.
    run_check(services, seats_available=6, non_reserved_seats=None)
    assert sql("select non_reserved_seats from class_states") == [{"non_reserved_seats": 0}]
    assert sql("select non_reserved_seats from seatwatch_section_states") == [{"non_reserved_seats": 0}]


def test_an_unknown_count_with_no_seats_at_all_is_a_fill(services, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0, non_reserved_seats=0)
    run_check(services, seats_available=4, non_reserved_seats=3)
    assert len(resend_server.emails) == 1
    # Non-reserved seats cannot outnumber seats: none left is a fill, whatever the count says.
    assert run_check(services, seats_available=0, non_reserved_seats=None).changes == ["seats_filled"]
    assert run_check(services, seats_available=4, non_reserved_seats=2).changes == ["seat_available"]
    assert len(resend_server.emails) == 2


def test_a_section_without_reservations_still_opens_on_seats_available(services, resend_server, make_watch):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0, non_reserved_seats=None)
    assert run_check(services, seats_available=3, non_reserved_seats=None).changes == ["seat_available"]
    assert len(resend_server.emails) == 1


# --- instructor --------------------------------------------------------------------------------

def test_an_unreadable_instructor_never_replaces_a_name(services, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0, instructor="Staff")
    assert run_check(services, seats_available=0, instructor="Jane Smith").changes == ["instructor_assigned"]
    for flap in ("", None, "Jane Smith", "  ", "Jane Smith"):
        assert run_check(services, seats_available=0, instructor=flap).changes == []
    assert sql("select instructor_name from seatwatch_section_states") == [{"instructor_name": "Jane Smith"}]
    assert len(resend_server.emails) == 1


def test_the_same_name_is_never_announced_twice_to_a_watch(services, resend_server, make_watch, sql):
    make_watch("a@asu.edu", NBR)
    run_check(services, seats_available=0, instructor="Staff")
    run_check(services, seats_available=0, instructor="Jane Smith")
    assert len(resend_server.emails) == 1
    # A day later the claim has expired; the section goes back to Staff and Jane Smith again.
    sql("update notifications_sent set sent_at = sent_at - interval '25 hours', "
        "expires_at = expires_at - interval '25 hours'")
    sql("update seatwatch_section_states set instructor_name = ''")  # a state stored before this fix
    assert run_check(services, seats_available=0, instructor="Jane Smith").changes == []
    run_check(services, seats_available=0, instructor="Staff")
    # Staff -> Jane Smith is news for the section, but this watch was told that name already.
    assert run_check(services, seats_available=0, instructor="Jane Smith").claimed == 0
    assert len(resend_server.emails) == 1
    # Another name is news, even within the first one's 24 hours.
    result = run_check(services, seats_available=0, instructor="Ada Lovelace")
    assert result.changes == ["instructor_assigned"] and result.delivered == 1
    assert "Ada Lovelace" in resend_server.emails[-1]["text"]
    assert len(resend_server.emails) == 2
