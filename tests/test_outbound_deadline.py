"""Every scraper and Resend call ends within its deadline, whatever the peer does (issue 26):
a peer that trickles its head or its body a byte at a time, one that never answers, one that sends
an endless body. urllib3's timeouts bound each read, not the call: before this, a trickle held a
call with a 2-second timeout for as long as the peer went on.

Driven through the real check (app.check.run, its breaker and Redis) and the real mailer (the resend
SDK) against tests/trickle.TricklingServer on a real socket.
"""

from __future__ import annotations

import time

import pytest
import resend

from app.check.run import CheckFailed, check_section
from app.check.scraper import ScraperClient
from app.mail.mailer import Mailer, SendFailed
from tests.fakes import RESEND_KEY, SCRAPER_TOKEN
from tests.trickle import TricklingServer

TERM, NBR = "2261", "12430"
MODES = ["head", "body", "huge", "silent"]
DEADLINE = 1.5


@pytest.mark.parametrize("mode", MODES)
def test_a_scraper_call_ends_within_its_deadline(services, monkeypatch, mode):
    with TricklingServer(mode) as peer:
        monkeypatch.setattr(services, "scraper", ScraperClient(peer.url, SCRAPER_TOKEN, DEADLINE))
        started = time.monotonic()
        with pytest.raises(CheckFailed) as failed:
            check_section(services, TERM, NBR)
        took = time.monotonic() - started
    assert peer.requests == 1
    assert took < DEADLINE + 3.0, f"{mode}: the call took {took:.1f}s"  # the peer would go on for 12 s
    # the failure is visible: the check failed with a reason and the breaker counted it
    assert "timed out after 1.5s" in str(failed.value) or "larger than" in str(failed.value)
    assert services.breaker.status()["failure_count"] == 1


def test_the_scraper_client_still_reuses_its_connection(services, scraper):
    scraper.set_section(TERM, NBR, seats_available=3)
    client = ScraperClient(scraper.url, SCRAPER_TOKEN, DEADLINE)
    for _ in range(3):
        assert client.fetch(TERM, NBR).seats_available == 3
    [pool] = client.client.manager.pools._container.values()
    assert pool.num_connections == 1


@pytest.fixture
def restore_resend_globals(monkeypatch):
    for name in ("api_url", "api_key", "default_http_client"):
        monkeypatch.setattr(resend, name, getattr(resend, name))


@pytest.mark.parametrize("mode", MODES)
def test_a_resend_call_ends_within_its_deadline(restore_resend_globals, mode):
    emails = [{"from": "PickMyClass <alerts@example.test>", "to": ["a@asu.edu"],
               "subject": "s", "html": "<p>h</p>", "text": "t"}]
    with TricklingServer(mode) as peer:
        mailer = Mailer(RESEND_KEY, peer.url, attempts=2, timeout=DEADLINE, sleep=lambda s: None)
        started = time.monotonic()
        with pytest.raises(SendFailed) as failed:
            mailer.send_batch(emails, "seatwatch-test-key")
        took = time.monotonic() - started
    assert peer.requests == 2  # both attempts reached the peer, each ended by its deadline
    assert took < 2 * DEADLINE + 4.0, f"{mode}: two attempts took {took:.1f}s"
    # not given up, and in doubt: Resend may have accepted a request whose answer never came
    assert not failed.value.permanent and failed.value.maybe_sent
    assert "timed out after 1.5s" in str(failed.value) or "larger than" in str(failed.value)


def test_the_resend_client_still_speaks_to_resend(services, resend_server, restore_resend_globals):
    mailer = Mailer(RESEND_KEY, resend_server.url, timeout=DEADLINE, sleep=lambda s: None)
    emails = [{"from": "PickMyClass <alerts@example.test>", "to": [f"{n}@asu.edu"],
               "subject": "s", "html": "<p>h</p>", "text": "t"} for n in ("a", "b")]
    result = mailer.send_batch(emails, "seatwatch-ok-key")
    assert len(result.ids) == 2 and all(result.ids) and len(resend_server.emails) == 2
    assert mailer.send_batch(emails, "seatwatch-ok-key").ids == result.ids  # replayed
    assert len(resend_server.emails) == 2
