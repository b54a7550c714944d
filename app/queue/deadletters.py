"""Checks that failed every retry, kept where the operator can see and requeue them.

The old system's dead letter queue, as a capped Redis list of JSON entries (newest first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Iterable

import redis

from app.keys import Keys

KEEP = 1000
log = logging.getLogger(__name__)


def entry_id(raw: bytes | str) -> str:
    """A short stable id of one entry: its stored bytes' digest (entries carry their time, so two
    failures of one section have two ids)."""
    return hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()[:12]


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
        """The entries, newest first, each with its `id` (what `drop` takes)."""
        return [{"id": entry_id(x), **json.loads(x)} for x in self.client.lrange(self.key, 0, limit - 1)]

    def drop(self, ids: Iterable[str] | None) -> list[dict]:
        """Remove the entries with these ids (None: every entry) without requeueing them: the
        operator acknowledges a section that cannot be checked (a cancelled class). Returns what
        went; the count of all ever dropped is kept beside the list (`dropped()`)."""
        wanted = None if ids is None else set(ids)
        raw = [x for x in self.client.lrange(self.key, 0, -1) if wanted is None or entry_id(x) in wanted]
        if not raw:
            return []
        with self.client.pipeline() as pipe:
            for value in raw:
                pipe.lrem(self.key, 1, value)
            pipe.incrby(self.key + ":dropped", len(raw))
            pipe.execute()
        gone = [{"id": entry_id(x), **json.loads(x)} for x in raw]
        for entry in gone:
            log.warning("dead letter %s dropped by the operator: %s/%s (%s)", entry["id"], entry["term"],
                        entry["class_nbr"], entry["reason"][:120])
        return gone

    def dropped(self) -> int:
        return int(self.client.get(self.key + ":dropped") or 0)

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
