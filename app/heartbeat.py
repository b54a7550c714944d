"""The consumer's heartbeat: proof that a worker is alive and its scheduler ticks.

Written when the consumer starts and by a periodic task, so a fresh heartbeat means the
scheduler enqueued it and a worker ran it. One hash field per host.
"""

from __future__ import annotations

import time

import redis

from app.keys import Keys
from app.settings import hostname

INTERVAL_SECONDS = 300  # the periodic task's period; the health check allows two of them


class Heartbeat:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.heartbeat

    def beat(self) -> None:
        self.client.hset(self.key, hostname(), f"{time.time():.3f}")

    def latest(self) -> tuple[str | None, float | None]:
        """(host, epoch seconds) of the most recent beat, or (None, None)."""
        beats = {k: float(v) for k, v in self.client.hgetall(self.key).items()}
        if not beats:
            return None, None
        host = max(beats, key=beats.get)
        return (host.decode() if isinstance(host, bytes) else host), beats[host]
