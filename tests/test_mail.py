"""Emails and unsubscribe tokens in the formats the running site expects."""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.changes import Change
from app.mail import build_email
from app.scraper import SectionInfo
from app.unsubscribe import make_token, verify_token

INFO = SectionInfo(subject="CSE", catalog_nbr="110", title="<script>alert(1)</script> & more",
                   instructor="O'Brien <b>", seats_available=3, seats_capacity=40,
                   non_reserved_seats=None, location="BYENG", meeting_times="MW")


def test_token_format_matches_the_site():
    token = make_token("user-1", "secret", now=1_000_000)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    user, expires, signature = raw.split(":")
    assert user == "user-1" and int(expires) == (1_000_000 + 90 * 86400) * 1000
    assert signature == hmac.new(b"secret", f"user-1:{expires}".encode(), hashlib.sha256).hexdigest()
    assert "=" not in token and "+" not in token and "/" not in token
    assert verify_token(token, "secret", now=1_000_000) == "user-1"
    assert verify_token(token, "other-secret", now=1_000_000) is None
    assert verify_token(token, "secret", now=1_000_000 + 91 * 86400) is None


def test_html_is_escaped_and_text_is_plain():
    email = build_email(Change.INSTRUCTOR_ASSIGNED, to="a@asu.edu", user_id="u", term="2261",
                        class_nbr="12431", info=INFO, site_url="https://s.example",
                        sender="x@s.example", unsubscribe_secret="k", now=0)
    assert "<script>" not in email["html"] and "&lt;script&gt;" in email["html"]
    assert "O&#x27;Brien &lt;b&gt;" in email["html"]
    assert "<script>alert(1)</script> & more" in email["text"]
    assert email["subject"] == "👨‍🏫 Instructor Assigned: CSE 110 (12431)"
    assert email["to"] == ["a@asu.edu"] and email["from"] == "x@s.example"


def test_building_is_deterministic_for_a_given_time():
    args = dict(to="a@asu.edu", user_id="u", term="2261", class_nbr="12431", info=INFO,
                site_url="https://s.example", sender="x@s.example", unsubscribe_secret="k", now=5)
    assert build_email(Change.SEAT_AVAILABLE, **args) == build_email(Change.SEAT_AVAILABLE, **args)
