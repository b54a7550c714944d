"""Timestamps as the JSON endpoints and CLI print them: ISO 8601 in UTC."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_from_epoch(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
