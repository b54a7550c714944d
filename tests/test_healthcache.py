"""The health cache: one computation per TTL however many callers, and each answer's age."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from app.health.cache import HealthCache


def test_one_computation_serves_concurrent_callers():
    calls = []
    release = threading.Event()

    def compute():
        calls.append(1)
        release.wait(5)  # slow, like a report waiting on a dependency
        return {"status": "healthy", "n": len(calls)}

    cache = HealthCache(compute, ttl=60)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = [pool.submit(cache.get) for _ in range(20)]
        time.sleep(0.2)
        release.set()
        results = [a.result(timeout=10) for a in answers]
    assert len(calls) == 1 and {r["n"] for r in results} == {1}


def test_stale_report_is_served_while_one_caller_refreshes():
    now = [0.0]
    gate = threading.Event()
    versions = iter(range(1, 10))

    def compute():
        version = next(versions)
        if version == 2:
            gate.wait(5)
        return {"version": version}

    cache = HealthCache(compute, ttl=5, clock=lambda: now[0])
    assert cache.get() == {"version": 1, "cache_age_ms": 0}
    now[0] = 7.0  # stale: the next caller refreshes, and blocks in compute
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    time.sleep(0.1)
    assert cache.get() == {"version": 1, "cache_age_ms": 7000}  # served at once, with its age
    gate.set()
    refresher.join(5)
    assert cache.get()["version"] == 2
