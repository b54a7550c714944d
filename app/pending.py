"""Which section checks are waiting or running, so a cron run never enqueues one twice.

A marker is set (SET NX) when a check is enqueued and deleted when the check finishes for good
(done, dead-lettered, superseded, interrupted), so the next hour enqueues it again. The TTL is a
safety net for a worker killed mid-check: it lapses before the section's next hourly run.
"""

from __future__ import annotations

from typing import Iterable

import redis

from app.keys import Keys

MARKER_TTL_SECONDS = 50 * 60


class PendingChecks:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: int = MARKER_TTL_SECONDS):
        self.client = client
        self.keys = keys
        self.ttl = ttl

    def claim(self, sections: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The sections not already pending, now marked pending (one round trip)."""
        sections = list(dict.fromkeys(sections))
        if not sections:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for term, nbr in sections:
                pipe.set(self.keys.pending(term, nbr), "1", nx=True, ex=self.ttl)
            taken = pipe.execute()
        return [s for s, ok in zip(sections, taken) if ok]

    def release(self, term: str, class_nbr: str) -> None:
        self.client.delete(self.keys.pending(term, class_nbr))

    def release_many(self, sections: Iterable[tuple[str, str]]) -> None:
        keys = [self.keys.pending(term, nbr) for term, nbr in sections]
        if keys:
            self.client.delete(*keys)

    def is_pending(self, term: str, class_nbr: str) -> bool:
        return bool(self.client.exists(self.keys.pending(term, class_nbr)))
