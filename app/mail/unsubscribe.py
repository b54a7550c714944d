"""One-click unsubscribe tokens, in the exact format the running site verifies.

token = base64url("{user_id}:{expires_ms}:{hex hmac-sha256('{user_id}:{expires_ms}')}"), no padding,
signed with the unsubscribe secret (today SUPABASE_SERVICE_ROLE_KEY), valid 90 days.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

VALID_DAYS = 90


def _sign(message: str, secret: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def make_token(user_id: str, secret: str, now: float | None = None) -> str:
    expires_ms = int(((time.time() if now is None else now) + VALID_DAYS * 86400) * 1000)
    message = f"{user_id}:{expires_ms}"
    raw = f"{message}:{_sign(message, secret)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify_token(token: str, secret: str, now: float | None = None) -> str | None:
    """The user id if the token is genuine and unexpired, else None (what the site does)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        user_id, expires_ms, signature = raw.rsplit(":", 2)
        expires = int(expires_ms)
    except (ValueError, UnicodeDecodeError):
        return None
    # As bytes: compare_digest refuses str with non-ASCII characters (a forged token could carry them).
    if not hmac.compare_digest(signature.encode(), _sign(f"{user_id}:{expires_ms}", secret).encode()):
        return None
    if expires < (time.time() if now is None else now) * 1000:
        return None
    return user_id
