"""Timestamps as the JSON endpoints and CLI print them: ISO 8601 in UTC.

The format is JavaScript's `Date.toISOString()` (milliseconds, `Z`), which the old service gave
and monitors may parse: `2026-11-30T14:00:05.123Z`.
"""

from __future__ import annotations

from datetime import datetime, timezone


def iso_from_epoch(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return iso(datetime.fromtimestamp(seconds, timezone.utc))


def iso(moment: datetime) -> str:
    """An aware datetime as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
