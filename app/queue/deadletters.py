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

    def requeue(self, enqueue) -> dict:
        """Hand every entry to `enqueue` (a list of (term, class_nbr)), then remove exactly those
        entries. If enqueueing fails, nothing is removed: the entries stay for the next try, and
        entries added meanwhile are never touched."""
        raw = self.client.lrange(self.key, 0, -1)
        entries = [json.loads(x) for x in raw]
        requeued = enqueue([(e["term"], e["class_nbr"]) for e in entries])
        with self.client.pipeline() as pipe:
            for value in raw:
                pipe.lrem(self.key, 1, value)
            pipe.execute()
        return {"dead_letters": len(entries), "requeued": requeued}
