"""Which section checks are waiting or running, so a section is never on the queue twice.

One marker per section, in one of two states:

- `q:<enqueued_at>`: a copy of its check waits on the queue or for a retry. It lives as long as
  the copy waits: QUEUED_TTL_SECONDS, renewed by every cron run of the section's group that
  finds it still waiting (so a backlog of any length never gets a second copy). A copy that can
  no longer run must not block its section past its group's next slot (issue 26): a marker
  older than STALE_AFTER_SECONDS (queued for an earlier slot) is taken over by the run that finds
  it when nothing older than that run is left on the queue (the queue is first in, first out: its
  copy was taken off and is no longer waiting), and any marker after MAX_WAIT_SECONDS. A copy
  dropped unrun (a rotated signing key, an unknown task) frees its marker at once (app.tasks);
  one taken by a worker that died runs again from its lease (app.queue.instance).
- `r`: a worker is running the check. RUNNING_TTL_SECONDS bounds it: a worker killed mid-check
  frees the section well before its next hourly slot.

The marker is set and the copy pushed in one script (`enqueue`), so a cron run killed at any
point leaves either both or neither: never a marker with no copy behind it, which would make the
rerun skip the section. Deleted when the check finishes for good (done, dead-lettered,
superseded, interrupted), so the next hour enqueues it again.
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import redis

from app.keys import Keys

QUEUED_TTL_SECONDS = 2 * 3600  # above the hour between two runs of a group, which renew it
MAX_WAIT_SECONDS = 6 * 3600
# A group's runs are an hour apart: a copy this old was queued for an earlier slot of its group.
STALE_AFTER_SECONDS = 45 * 60
RUNNING_TTL_SECONDS = 15 * 60  # far above the longest check (scraper timeout + email retries)
CHUNK = 1000  # sections per script call: bounds how long one call blocks Redis (a few ms)

# KEYS: queue, slot-stats hash ('' for none), then one pending key per section.
# ARGV: queued ttl, now, max wait, group, stats ttl, stale after, payloads this run queued before
# this call, then one payload per section.
# Per section: take the marker (SET NX) and queue the payload; a marker already there is a copy
# waiting (renewed, unless queued longer than the max wait, or longer than `stale after` while
# the queue holds nothing older than this run: then taken over) or running (left). LLEN at most
# once per call, and only when such an old marker is found.
# The taken payloads go in one LPUSH, after the slot's count (app.schedule.capacity) is raised: no check of
# the slot can finish before its count is known. Returns the 1-based positions it queued.
_ENQUEUE_SCRIPT = """
local ttl, now, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stale_after, pushed_before = tonumber(ARGV[6]), tonumber(ARGV[7])
local marker = 'q:' .. ARGV[2]
local taken, payloads = {}, {}
local drained = nil
for i = 3, #KEYS do
    local key = KEYS[i]
    local fresh = redis.call('SET', key, marker, 'NX', 'EX', ttl)
    if not fresh then
        local held = redis.call('GET', key)
        if held and string.sub(held, 1, 2) == 'q:' then
            local age = now - (tonumber(string.sub(held, 3)) or 0)
            if age > stale_after and drained == nil then
                drained = redis.call('LLEN', KEYS[1]) <= pushed_before
            end
            if age > max_wait or (age > stale_after and drained) then
                redis.call('SET', key, marker, 'EX', ttl)
                fresh = true
            else
                redis.call('EXPIRE', key, ttl)
            end
        end
    end
    if fresh then
        taken[#taken + 1] = i - 2
        payloads[#payloads + 1] = ARGV[i + 5]
    end
end
if #payloads > 0 then
    if KEYS[2] ~= '' then
        redis.call('HSETNX', KEYS[2], 'group', ARGV[4])
        redis.call('HSETNX', KEYS[2], 'started_at', ARGV[2])
        redis.call('HINCRBY', KEYS[2], 'enqueued', #payloads)
        redis.call('EXPIRE', KEYS[2], ARGV[5])
    end
    redis.call('LPUSH', KEYS[1], unpack(payloads))
end
return taken
"""

_CLAIM_SCRIPT = """
local taken = {}
for i, key in ipairs(KEYS) do
    if redis.call('SET', key, ARGV[2], 'NX', 'EX', ARGV[1]) then
        taken[#taken + 1] = i
    end
end
return taken
"""


class PendingChecks:
    def __init__(self, client: redis.Redis, keys: Keys, ttl: int = QUEUED_TTL_SECONDS):
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self._enqueue = client.register_script(_ENQUEUE_SCRIPT)
        self._claim = client.register_script(_CLAIM_SCRIPT)

    def enqueue(self, sections: Sequence[tuple[str, str]], payloads: Sequence[bytes],
                queue_key: str, now: float, stats: tuple[str, str, int] | None = None,
                chunk: int = CHUNK) -> list[tuple[str, str]]:
        """Queue payloads[i] for each section not already waiting or running, marking it in the
        same script; `stats` = (slot-stats key, group, its ttl) counts them for their slot.
        Returns the sections queued, one script call per `chunk`."""
        queued: list[tuple[str, str]] = []
        stats_key, group, stats_ttl = stats or ("", "", 0)
        for start in range(0, len(sections), chunk):
            part = sections[start:start + chunk]
            keys = [queue_key, stats_key, *(self.keys.pending(t, n) for t, n in part)]
            args = [self.ttl, repr(now), MAX_WAIT_SECONDS, group, stats_ttl,
                    STALE_AFTER_SECONDS, len(queued), *payloads[start:start + chunk]]
            queued.extend(part[i - 1] for i in self._enqueue(keys=keys, args=args))
        return queued

    def claim(self, sections: Iterable[tuple[str, str]],
              now: float | None = None) -> list[tuple[str, str]]:
        """Markers only, for checks queued by other means (the benchmarks' one-by-one enqueue)."""
        now = time.time() if now is None else now
        sections = list(dict.fromkeys(sections))
        fresh: list[tuple[str, str]] = []
        for start in range(0, len(sections), CHUNK):
            part = sections[start:start + CHUNK]
            keys = [self.keys.pending(term, nbr) for term, nbr in part]
            fresh.extend(part[i - 1] for i in self._claim(keys=keys, args=[self.ttl, f"q:{now!r}"]))
        return fresh

    def running(self, term: str, class_nbr: str, pipe=None) -> None:
        """A worker starts the check: from now on a killed worker frees it within RUNNING_TTL.
        With `pipe`, queued there (sent in the breaker's round trip, app.tasks)."""
        (pipe or self.client).set(self.keys.pending(term, class_nbr), "r", ex=RUNNING_TTL_SECONDS, xx=True)

    def waiting(self, term: str, class_nbr: str, since: float) -> None:
        """The check waits for a retry: kept like a queued copy."""
        self.client.set(self.keys.pending(term, class_nbr), f"q:{since!r}", ex=self.ttl, xx=True)

    def release(self, term: str, class_nbr: str, pipe=None) -> None:
        (pipe or self.client).delete(self.keys.pending(term, class_nbr))

    def release_many(self, sections: Iterable[tuple[str, str]]) -> None:
        keys = [self.keys.pending(term, nbr) for term, nbr in sections]
        if keys:
            self.client.delete(*keys)

    def is_pending(self, term: str, class_nbr: str) -> bool:
        return bool(self.client.exists(self.keys.pending(term, class_nbr)))
