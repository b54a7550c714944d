"""State per (term, class_nbr), and scrapes applied in the order they were taken."""

from __future__ import annotations

import threading

from app.check.run import check_section
from app.db import watches

NBR = "12430"
SPRING, FALL = "2261", "2267"


def test_one_class_number_in_two_terms_keeps_two_histories(services, scraper, resend_server, make_watch, sql):
    make_watch("spring@asu.edu", NBR, term=SPRING)
    make_watch("fall@asu.edu", NBR, term=FALL)
    hours = [  # (spring seats, fall seats), one check of each term per hour
        (0, 5),  # baselines
        (3, 5),  # spring opens: the spring watcher hears
        (3, 0),  # fall fills: nobody hears
        (0, 2),  # spring fills, fall opens: the fall watcher hears
        (1, 2),  # spring opens again: the spring watcher hears again
        (1, 2),  # nothing changed
    ]
    for spring, fall in hours:
        scraper.set_section(SPRING, NBR, seats_available=spring)
        scraper.set_section(FALL, NBR, seats_available=fall, title="Fall section")
        check_section(services, SPRING, NBR)
        check_section(services, FALL, NBR)
    spring_mail = resend_server.to("spring@asu.edu")
    fall_mail = resend_server.to("fall@asu.edu")
    assert len(spring_mail) == 2 and len(fall_mail) == 1
    assert all(f"term={SPRING}" in e["text"] and "Fall section" not in e["html"] for e in spring_mail)
    assert f"term={FALL}" in fall_mail[0]["text"] and "Fall section" in fall_mail[0]["html"]
    states = sql("select term, seats_available from seatwatch_section_states order by term")
    assert states == [{"term": SPRING, "seats_available": 1}, {"term": FALL, "seats_available": 2}]
    # The site's dashboard row (one per class number) is still written, by the last check.
    assert sql("select term from class_states where class_nbr = %s", (NBR,)) == [{"term": FALL}]


def test_an_older_scrape_that_commits_late_changes_nothing(
        services, scraper, resend_server, make_watch, sql, monkeypatch):
    """Check A scrapes 'full', then stalls; check B scrapes 'open' later and commits first. A must
    not clear B's claim (that would notify the same opening again an hour later)."""
    make_watch("a@asu.edu", NBR, term=SPRING)
    scraper.set_section(SPRING, NBR, seats_available=0)
    check_section(services, SPRING, NBR)  # baseline: full

    scraped, release = threading.Event(), threading.Event()
    real_lock = watches.lock_section_state
    stalled = {}

    def lock_after_stall(conn, term, class_nbr, *args):
        if threading.current_thread().name == "check-A":
            scraped.set()
            release.wait(10)
        return real_lock(conn, term, class_nbr, *args)

    monkeypatch.setattr(watches, "lock_section_state", lock_after_stall)

    def run_a():
        stalled["result"] = check_section(services, SPRING, NBR)

    a = threading.Thread(target=run_a, name="check-A")
    a.start()
    assert scraped.wait(10)
    scraper.set_section(SPRING, NBR, seats_available=3)
    b = check_section(services, SPRING, NBR)
    assert b.changes == ["seat_available"] and b.delivered == 1
    release.set()
    a.join(10)
    assert stalled["result"].stale and stalled["result"].changes == []
    assert sql("select seats_available from seatwatch_section_states") == [{"seats_available": 3}]
    assert sql("select seats_available from class_states") == [{"seats_available": 3}]
    # An hour later the seat is still open: no second email about the same opening.
    check_section(services, SPRING, NBR)
    assert len(resend_server.to("a@asu.edu")) == 1
    assert sql("select count(*) as n from notifications_sent") == [{"n": 1}]


def test_without_state_of_its_own_the_sites_row_of_the_same_term_counts(
        services, scraper, resend_server, make_watch, sql):
    """The old worker may have stored a section (class_states) that this service never checked:
    an opening against that row is an opening, not a silent baseline. Another term's row is not."""
    make_watch("a@asu.edu", NBR, term=SPRING)
    make_watch("b@asu.edu", "12432", term=SPRING)
    for nbr, term in ((NBR, SPRING), ("12432", FALL)):
        sql("""insert into class_states (term, subject, catalog_nbr, class_nbr, instructor_name,
                                         seats_available, seats_capacity)
               values (%s, 'CSE', '110', %s, 'Staff', 0, 100)""", (term, nbr))
        scraper.set_section(SPRING, nbr, seats_available=2)
    assert check_section(services, SPRING, NBR).changes == ["seat_available"]
    assert check_section(services, SPRING, "12432").baseline
    assert [e["to"][0] for e in resend_server.emails] == ["a@asu.edu"]
