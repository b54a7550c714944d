"""Checks that failed every retry, kept where the operator can see and requeue them.

The old system's dead letter queue, as a capped Redis list of JSON entries (newest first).
"""

from __future__ import annotations

import json
import time

import redis

from app.keys import Keys

KEEP = 1000


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys):
        self.client = client
        self.key = keys.dead_letters

    def add(self, term: str, class_nbr: str, reason: str, attempts: int) -> None:
        entry = {"term": term, "class_nbr": class_nbr, "reason": reason[:500],
                 "attempts": attempts, "failed_at": time.time()}
        with self.client.pipeline() as pipe:
            pipe.lpush(self.key, json.dumps(entry))
            pipe.ltrim(self.key, 0, KEEP - 1)
            pipe.execute()

    def list(self, limit: int = KEEP) -> list[dict]:
        return [json.loads(x) for x in self.client.lrange(self.key, 0, limit - 1)]

    def count(self) -> int:
        return int(self.client.llen(self.key))

    def take_all(self) -> list[dict]:
        """Remove and return every entry (for requeueing), atomically."""
        with self.client.pipeline() as pipe:
            pipe.lrange(self.key, 0, -1)
            pipe.delete(self.key)
            entries, _ = pipe.execute()
        return [json.loads(x) for x in entries]
