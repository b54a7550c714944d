"""Unsubscribe tokens: forged ones are rejected, never crash the verifier."""

from __future__ import annotations

import base64

from app.mail.unsubscribe import make_token, verify_token


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_non_ascii_signature_is_rejected_not_raised():
    expires = 10**13
    assert verify_token(_token(f"user-1:{expires}:é" + "0" * 63), "secret", now=0) is None
    assert verify_token(_token(f"üser:{expires}:{'ab' * 32}"), "secret", now=0) is None


def test_malformed_tokens_are_rejected():
    for token in ("", "!!!", _token("no-colons"), _token("a:not-a-number:sig"), "\u00e9\u00e9"):
        assert verify_token(token, "secret") is None
    good = make_token("user-1", "secret")
    assert verify_token(good, "secret") == "user-1"
