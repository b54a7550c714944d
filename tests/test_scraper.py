"""The scraper client: well-formed answers parse, everything else is a ScraperError, never a crash."""

from __future__ import annotations

import json

import pytest

from app.check.scraper import ScraperClient, ScraperError, parse_section
from tests.fakes import SCRAPER_TOKEN

TERM, NBR = "2261", "12431"


@pytest.fixture
def client(scraper, services):
    return ScraperClient(scraper.url + "/", SCRAPER_TOKEN, timeout=1.0)


def test_a_success_parses(client, scraper):
    scraper.set_section(TERM, NBR, seats_available=4, non_reserved_seats=1, instructor="Grace Hopper")
    info = client.fetch(TERM, NBR)
    assert info.seats_available == 4 and info.open_seats == 1 and info.instructor == "Grace Hopper"
    assert scraper.calls == [(TERM, NBR)]


@pytest.mark.parametrize("status, body, ctype, fragment", [
    (200, b"<html>busy</html>", "text/html", "not valid JSON"),
    (200, b"[1, 2]", "application/json", "not a JSON object"),
    (200, b'{"success": false, "error": "Timeout"}', "application/json", "Timeout"),
    (200, b'{"success": true}', "application/json", "no data"),
    (200, json.dumps({"success": True, "data": {"subject": "CSE"}}).encode(), "application/json", "catalog_nbr"),
    (200, json.dumps({"success": True, "data": {
        "subject": "CSE", "catalog_nbr": "110", "title": "T", "instructor": "Staff",
        "seats_available": "3", "seats_capacity": 10, "non_reserved_seats": None,
        "location": "", "meeting_times": ""}}).encode(), "application/json", "seats_available"),
    (200, json.dumps({"success": True, "data": {
        "subject": "CSE", "catalog_nbr": "110", "title": "T", "instructor": "Staff",
        "seats_available": 3, "seats_capacity": 10, "non_reserved_seats": "many",
        "location": "", "meeting_times": ""}}).encode(), "application/json", "non_reserved_seats"),
    (500, b'{"success": false, "error": "Section not found"}', "application/json", "HTTP 500: Section not found"),
    (429, b'{"success": false, "error": "Rate limited"}', "application/json", "HTTP 429"),
    (502, b"Bad Gateway", "text/plain", "HTTP 502"),
])
def test_malformed_answers_are_errors(client, scraper, status, body, ctype, fragment):
    scraper.set_raw(TERM, NBR, status, body, ctype)
    with pytest.raises(ScraperError, match=fragment):
        client.fetch(TERM, NBR)


def test_wrong_token_is_an_error(scraper, services):
    with pytest.raises(ScraperError, match="HTTP 401"):
        ScraperClient(scraper.url, "wrong", timeout=1.0).fetch(TERM, NBR)


def test_timeout_is_bounded(client, scraper):
    scraper.set_section(TERM, NBR)
    scraper.delay = 1.5
    with pytest.raises(ScraperError, match="timed out after 1s"):
        client.fetch(TERM, NBR)


def test_connection_refused_is_an_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ScraperError, match="request failed"):
        ScraperClient(f"http://127.0.0.1:{port}", "t", timeout=1.0).fetch(TERM, NBR)


def test_null_text_fields_are_tolerated():
    info = parse_section({"success": True, "data": {
        "subject": "CSE", "catalog_nbr": "110", "title": "T", "instructor": None,
        "seats_available": 0, "seats_capacity": 10, "non_reserved_seats": None,
        "location": None, "meeting_times": None}})
    assert info.instructor == "" and info.open_seats == 0
