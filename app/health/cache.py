"""The health report, computed at most once every few seconds per process.

Anyone may call the health URL, as often as they like: without a cache each request would run
every check against PostgreSQL and Redis. Here one caller computes (single flight); callers
arriving meanwhile get the previous report if there is one, else wait for the new one. Each
answer says how old it is (`cache_age_ms`).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

TTL_SECONDS = 5.0


class HealthCache:
    def __init__(self, compute: Callable[[], dict], ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._compute = compute
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()  # held by the one caller computing
        # (report, computed at): one tuple, replaced whole, so readers never mix two reports.
        self._entry: tuple[dict, float] | None = None

    def get(self) -> dict:
        """The cached report with `cache_age_ms`, recomputed when older than the TTL."""
        if self._fresh():
            return self._aged()
        # Someone is computing: serve the previous report if any, else wait for theirs.
        if self._lock.acquire(blocking=self._entry is None):
            try:
                if not self._fresh():  # another caller may have refreshed it meanwhile
                    self._entry = (self._compute(), self._clock())
            finally:
                self._lock.release()
        return self._aged()

    def _fresh(self) -> bool:
        entry = self._entry
        return entry is not None and self._clock() - entry[1] < self.ttl

    def _aged(self) -> dict:
        report, at = self._entry
        return {**report, "cache_age_ms": round((self._clock() - at) * 1000)}
