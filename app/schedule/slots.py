"""Cron slots and their "ran" markers: each (hour, group) slot counts as run once its checks are queued.

A slot is named by the hour it starts in and its group (`2026-11-30T13:odd` starts at 13:30). The
latest slot of a group is the last :00 (even) or :30 (odd) at or before now, whichever hour it
fell in: that is the one the scheduler's catch-up and any manual run use, never one still ahead.

The marker is written by the cron run only after the slot's checks are on the queue (app.schedule.cron),
under the cron lock: a run killed before that leaves no marker, so the next tick runs the slot
again; a run that got that far is never run again (two runs of one slot cannot overlap: the lock).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import redis

from app.keys import Keys

# A group's latest slot is at most an hour old: two hours keeps its marker while it can be latest.
MARKER_TTL_SECONDS = 2 * 3600
# The minute of the hour each group's slot starts (even class numbers at :00, odd at :30).
SLOT_MINUTE = {"even": 0, "odd": 30}
SLOT_PERIOD = timedelta(hours=1)  # each group's slots are an hour apart


def slot_name(now: datetime, group: str) -> str:
    return f"{now:%Y-%m-%dT%H}:{group}"


def slot_start(now: datetime, group: str) -> datetime:
    """When this hour's slot of `group` starts (it may still be ahead of `now`)."""
    return now.replace(minute=SLOT_MINUTE[group], second=0, microsecond=0)


def latest_slot(now: datetime, group: str) -> tuple[str, datetime]:
    """(name, start) of the group's last slot that has started: this hour's or the previous one's."""
    start = slot_start(now, group)
    if start > now:
        start -= SLOT_PERIOD
    return slot_name(start, group), start


def start_of(slot: str) -> datetime | None:
    """A slot name's start (aware UTC); None for a name this module did not make."""
    try:
        hour, group = slot.rsplit(":", 1)
        return datetime.strptime(hour, "%Y-%m-%dT%H").replace(
            minute=SLOT_MINUTE[group], tzinfo=timezone.utc)
    except (ValueError, KeyError):
        return None


class SlotMarkers:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys

    def ran(self, slot: str) -> bool:
        return bool(self.client.exists(self.keys.cron_slot(slot)))

    def mark_ran(self, slot: str, holder: str, pipe=None) -> None:
        (pipe or self.client).set(self.keys.cron_slot(slot), holder, ex=MARKER_TTL_SECONDS)

    def forget(self, slot: str) -> None:
        self.client.delete(self.keys.cron_slot(slot))
