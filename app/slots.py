"""Cron slot markers: each (hour, group) slot runs once, however many triggers fire.

The scheduler's cron slots (app.catchup) and any /api/cron call race for SET NX on the slot's key;
the loser skips. A run that could not proceed (lock held, database down) gives the slot back so
a retry can still run it.
"""

from __future__ import annotations

from datetime import datetime

import redis

from app.keys import Keys

MARKER_TTL_SECONDS = 2 * 3600
# The minute of the hour each group's slot starts (even class numbers at :00, odd at :30).
SLOT_MINUTE = {"even": 0, "odd": 30}


def slot_name(now: datetime, group: str) -> str:
    return f"{now:%Y-%m-%dT%H}:{group}"


def slot_start(now: datetime, group: str) -> datetime:
    """When this hour's slot of `group` starts (it may still be ahead of `now`)."""
    return now.replace(minute=SLOT_MINUTE[group], second=0, microsecond=0)


class SlotMarkers:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.keys = keys

    def take(self, slot: str, holder: str) -> bool:
        return bool(self.client.set(self.keys.cron_slot(slot), holder, nx=True, ex=MARKER_TTL_SECONDS))

    def give_back(self, slot: str) -> None:
        self.client.delete(self.keys.cron_slot(slot))
