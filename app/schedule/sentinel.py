"""Noticing that the queue's Redis lost its data (restart without it, FLUSHALL, a failover, an
older RDB snapshot loaded after a crash).

The scheduler remembers in memory which slots ran (app.schedule.catchup), so it would never run a slot
again whose queued checks Redis dropped. Every PROBE_SECONDS it therefore asks, in one round trip
(GET + SET + INFO server: three commands, about 1,400 a day):

- the token it wrote last time: missing means the data is gone (FLUSHALL, a restart without it),
  a different one means Redis went back to an older copy;
- Redis's `run_id`, which every start of redis-server draws anew: a change means the server was
  restarted or replaced (a failover), and anything written after its last save may be gone even
  when the token survived. Issue 26: a probe at 13:58:30, an RDB save at 13:59, the 14:00 run's
  checks and marker, an OOM kill and a restart from the 13:59 snapshot: the token is the one
  expected, only the run_id tells.

Either way the caller forgets what ran and lets the slot markers (in the same Redis) decide: a slot
whose marker went with the lost writes runs again, one whose marker survived does not (so a restart
that lost nothing, AOF on, costs no extra run). A Redis that refuses INFO (some managed plans) is
judged on the token alone.

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
        self.run_id: str | None = None  # the server's run_id at the last call

    def lost(self) -> bool:
        """Whether Redis lost (or may have lost) writes since the last call (the first call only
        writes)."""
        token = uuid.uuid4().hex
        with self.client.pipeline(transaction=False) as pipe:  # no MULTI/EXEC: 3 commands, not 5
            pipe.get(self.key)
            pipe.set(self.key, token, ex=KEY_TTL_SECONDS)
            pipe.info("server")
            found, stored, info = pipe.execute(raise_on_error=False)
        if isinstance(found, Exception) or isinstance(stored, Exception):
            raise found if isinstance(found, Exception) else stored
        run_id = info.get("run_id") if isinstance(info, dict) else None
        expected, self.token = self.token, token
        expected_run, self.run_id = self.run_id, (str(run_id) if run_id else None)
        if isinstance(found, bytes):
            found = found.decode()
        if expected is None:
            return False
        if found != expected:
            reason = "sentinel missing" if found is None else "an older copy came back"
        elif expected_run and self.run_id and self.run_id != expected_run:
            reason = "the server restarted or was replaced: writes after its last save may be gone"
        else:
            return False
        log.warning("Redis lost its data (%s): the current slots run again unless their markers "
                    "survived", reason)
        return True


_sentinel: DataSentinel | None = None


def for_process(services) -> DataSentinel:
    global _sentinel
    if _sentinel is None:
        key = f"{services.keys.prefix}sentinel:{hostname()}:{os.getpid()}"
        _sentinel = DataSentinel(services.redis, key)
    return _sentinel
