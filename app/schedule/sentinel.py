"""Noticing that the queue's Redis lost its data (restart without it, FLUSHALL, a failover, an
older RDB snapshot loaded after a crash).

The scheduler remembers in memory which slots ran (app.schedule.catchup), so it would never run a slot
again whose queued checks Redis dropped. Every PROBE_SECONDS it therefore reads back a token it
wrote last time and writes a new one, in one round trip (GET + SET: two commands, ~800 a day).
A missing token means the data is gone; a different one means Redis went back to an older copy.
Either way the caller forgets what ran and lets the slot markers (in the same Redis) decide.

The key is per process (host and pid) so two schedulers never read each other's token, and it
expires by itself once its process is gone.
"""

from __future__ import annotations

import logging
import os
import uuid

import redis

from app.settings import hostname

log = logging.getLogger(__name__)

# With the scheduler's 60 s tick the probe runs every 3 to 4 minutes: a loss is noticed within
# 5 minutes, and the slots' checks are queued again on that same tick.
PROBE_SECONDS = 180
KEY_TTL_SECONDS = 3600


class DataSentinel:
    def __init__(self, client: redis.Redis, key: str):
        self.client = client
        self.key = key
        self.token: str | None = None  # what this process wrote last

    def lost(self) -> bool:
        """Whether Redis lost its data since the last call (the first call only writes)."""
        token = uuid.uuid4().hex
        with self.client.pipeline(transaction=False) as pipe:  # no MULTI/EXEC: 2 commands, not 4
            pipe.get(self.key)
            pipe.set(self.key, token, ex=KEY_TTL_SECONDS)
            found, _ = pipe.execute()
        expected, self.token = self.token, token
        if isinstance(found, bytes):
            found = found.decode()
        if expected is None or found == expected:
            return False
        log.warning("Redis lost its data (%s): the current slots run again",
                    "sentinel missing" if found is None else "an older copy came back")
        return True


_sentinel: DataSentinel | None = None


def for_process(services) -> DataSentinel:
    global _sentinel
    if _sentinel is None:
        key = f"{services.keys.prefix}sentinel:{hostname()}:{os.getpid()}"
        _sentinel = DataSentinel(services.redis, key)
    return _sentinel
