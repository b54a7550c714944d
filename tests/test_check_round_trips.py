"""A check's own Redis work is two round trips (issue 30): its running marker with the breaker's
script, and its slot's figures with the marker freed. Real Redis and PostgreSQL; the round trips
counted as redis-py writes them (one write per command, one per pipeline)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from app import tasks
from app.queue.instance import huey
from app.schedule import capacity

TERM, NBR = "2261", "12430"
SLOT = "2026-12-07T01:even"


@pytest.fixture
def round_trips(monkeypatch):
    """The Redis writes this thread makes (each a round trip), by their first command."""
    sent: list[bytes] = []
    me = threading.get_ident()
    real = redis.connection.AbstractConnection.send_packed_command

    def send(self, command, check_health=True):
        if threading.get_ident() == me:
            first = command if isinstance(command, (bytes, bytearray)) else b"".join(command)
            sent.append(first.split(b"\r\n")[2].upper())
        return real(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    return sent


@pytest.mark.parametrize("seats", [0, 3])  # a baseline, then a quiet check
def test_a_check_of_a_slot_costs_two_redis_round_trips(services, queue, scraper, make_watch,
                                                       round_trips, seats):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    if seats:
        tasks.check_section.call_local(TERM, NBR)  # the baseline, before counting
    capacity.open_slot(services.redis, services.keys, SLOT, "even", 2)
    services.pending.claim([(TERM, NBR)])
    scraper.set_section(TERM, NBR, seats_available=seats)
    round_trips.clear()
    huey.execute(tasks.check_section.s(TERM, NBR, time.time(), SLOT))
    # before: SET (running), EVALSHA (breaker), MULTI (slot figures), DEL (marker freed)
    assert round_trips == [b"SET", b"MULTI"], round_trips
    assert not services.pending.is_pending(TERM, NBR)  # freed
    figures = {_text(k): _text(v) for k, v in services.redis.hgetall(services.keys.slot_stats(SLOT)).items()}
    assert figures["done"] == "1" and figures["checked"] == "1", figures


def test_a_check_without_a_slot_frees_its_marker_when_it_completes(services, queue, scraper,
                                                                   make_watch, round_trips):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    services.pending.claim([(TERM, NBR)])
    round_trips.clear()
    huey.execute(tasks.check_section.s(TERM, NBR, time.time()))
    assert round_trips == [b"SET", b"DEL"], round_trips
    assert not services.pending.is_pending(TERM, NBR)


def test_the_running_marker_is_set_before_the_breaker_and_survives_a_script_flush(
        services, queue, scraper, make_watch):
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0)
    services.pending.claim([(TERM, NBR)])
    services.redis.script_flush()  # as a Redis restart leaves it: the breaker's script reloaded
    seen = []
    scraper_fetch = services.scraper.fetch

    def fetch(term, nbr):
        seen.append(services.redis.get(services.keys.pending(term, nbr)))
        return scraper_fetch(term, nbr)

    services.scraper.fetch = fetch
    try:
        huey.execute(tasks.check_section.s(TERM, NBR, time.time()))
    finally:
        del services.scraper.fetch
    assert [_text(v) for v in seen] == ["r"]  # running while it scraped
    assert not services.pending.is_pending(TERM, NBR)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
