"""The cron lock: one cron run at a time across every scheduler and the HTTP trigger.

redis-py's `Lock` does the work (SET NX PX to take it, a Lua compare-and-delete so only the holder
releases it). The token is unique per run and also says who holds it and since when, so the status
is one GET and needs no second key that could disagree with the lock.
"""

from __future__ import annotations

import os
import time
import uuid

import redis
from redis.exceptions import LockError

from app.settings import hostname
from app.timeutil import iso_from_epoch

TTL_SECONDS = 25 * 60


class CronLock:
    def __init__(self, client: redis.Redis, key: str, ttl: float = TTL_SECONDS):
        self.client = client
        self.key = key
        self.ttl = ttl

    def acquire(self) -> redis.lock.Lock | None:
        """The held lock, or None when another run holds it. Never blocks."""
        token = f"{hostname()}:{os.getpid()}:{int(time.time() * 1000)}:{uuid.uuid4().hex}"
        lock = self.client.lock(self.key, timeout=self.ttl, blocking=False, thread_local=False)
        return lock if lock.acquire(token=token) else None

    @staticmethod
    def release(lock: redis.lock.Lock) -> bool:
        """Release if still ours; False when it expired and maybe passed to another run."""
        try:
            lock.release()
            return True
        except LockError:
            return False

    def status(self) -> dict:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.key)
            pipe.pttl(self.key)
            token, pttl = pipe.execute()
        if not token:
            return {"locked": False, "lock_holder": None, "lock_acquired_at": None, "expires_at": None}
        token = token.decode() if isinstance(token, bytes) else token
        holder, acquired_ms = _parse(token)
        expires = time.time() + pttl / 1000 if pttl and pttl > 0 else None
        return {
            "locked": True,
            "lock_holder": holder,
            "lock_acquired_at": iso_from_epoch(acquired_ms / 1000) if acquired_ms else None,
            "expires_at": iso_from_epoch(expires),
        }

    def force_release(self) -> bool:
        """Operator's escape hatch (CLI): drop the lock whoever holds it."""
        return bool(self.client.delete(self.key))


def _parse(token: str) -> tuple[str, int | None]:
    parts = token.split(":")
    if len(parts) == 4 and parts[2].isdigit():
        return f"{parts[0]}:{parts[1]}", int(parts[2])
    return "unknown", None
