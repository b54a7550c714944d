"""What the worker did, as counters for /api/metrics: checks (done, failed, skipped), emails
(delivered, not delivered at their check), a histogram of check duration, and the worker's memory.

The web renders the metrics, the worker does the work: the figures meet in one Redis hash
(keys.work_stats). Each worker process counts in memory and adds what it counted since the last time
(HINCRBY / HINCRBYFLOAT, one pipelined round trip) on the scheduler tick, once a minute, only when
it counted something: an idle day costs no command, a busy hour 60 round trips, never one per
check (a managed Redis bills each command). The hash's figures only grow (Prometheus counters); a
restart of Redis without its data starts them again, which Prometheus reads as a counter reset.
The worker's resident memory goes with each flush (so it is as of its last busy minute, or its start).
"""

from __future__ import annotations

import os
import threading

BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)  # seconds; a scrape takes seconds
CHECK_OUTCOMES = ("done", "failed", "skipped")
EMAIL_OUTCOMES = ("delivered", "not_delivered")


def resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class WorkStats:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}
        self._started = True  # the first flush writes the memory even with nothing counted

    def _add(self, field: str, n: float) -> None:
        self._counts[field] = self._counts.get(field, 0) + n

    def check(self, outcome: str, seconds: float | None = None) -> None:
        with self._lock:
            self._add(f"checks:{outcome}", 1)
            if seconds is not None:
                for bound in BUCKETS:
                    if seconds <= bound:
                        self._add(f"duration_bucket:{bound:g}", 1)
                self._add("duration_count", 1)
                self._add("duration_sum", seconds)

    def emails(self, delivered: int, not_delivered: int) -> None:
        with self._lock:
            if delivered:
                self._add("emails:delivered", delivered)
            if not_delivered:
                self._add("emails:not_delivered", not_delivered)

    def flush(self, client, key: str, host: str) -> bool:
        """Add what was counted to the hash; False (no command) when there is nothing new."""
        with self._lock:
            counts, self._counts = self._counts, {}
            started, self._started = self._started, False
        if not counts and not started:
            return False
        try:
            with client.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    if isinstance(n, float) and not n.is_integer():
                        pipe.hincrbyfloat(key, field, n)
                    else:
                        pipe.hincrby(key, field, int(n))
                rss = resident_bytes()
                if rss is not None:
                    pipe.hset(key, f"worker_rss:{host}", rss)
                pipe.execute()
        except Exception:
            with self._lock:  # Redis away: counted again next time, not lost
                for field, n in counts.items():
                    self._add(field, n)
            raise
        return True


def read(client, key: str) -> dict:
    """The hash as numbers: {"checks": {outcome: n}, "emails": {...}, "duration": {...},
    "worker_rss": {host: bytes}}."""
    raw = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in client.hgetall(key).items()}
    out: dict = {"checks": {}, "emails": {}, "worker_rss": {},
                 "duration": {"buckets": {}, "count": raw.get("duration_count", 0.0),
                              "sum": raw.get("duration_sum", 0.0)}}
    for field, value in raw.items():
        kind, _, name = field.partition(":")
        if kind in ("checks", "emails", "worker_rss"):
            out[kind][name] = value
        elif kind == "duration_bucket":
            out["duration"]["buckets"][float(name)] = value
    return out


stats = WorkStats()  # this process's
