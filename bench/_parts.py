"""Bench-only tasks for bench/drain_parts.py: the parts of a check, each alone (issue 30).

A module of its own (huey names a task after its module; the consumer runs as __main__), imported
by the consumer when BENCH_PARTS=1 (bench/_consumer.py). Each task finishing (these and the real
check_section) is counted; every BENCH_PARTS_BATCH completions the time is written to Redis, so a
drain's end is stamped in the consumer when its last task ends, not when a poll sees it.
"""

from __future__ import annotations

import os
import threading
import time

from huey.signals import SIGNAL_COMPLETE

from app import tasks
from app.check import run as check
from app.check.scraper import parse_section
from app.queue.instance import huey
from app.services import get_services

BATCH = int(os.environ.get("BENCH_PARTS_BATCH", "500"))

if os.environ.get("BENCH_PARTS_PREPARE"):
    # Diagnosis only (issue 30): server-side prepared statements from the Nth use, in this
    # consumer's pool (the app turns them off for Supabase's transaction pooler, app.db).
    from app import db as _db

    _db.CONNECT_KWARGS["prepare_threshold"] = int(os.environ["BENCH_PARTS_PREPARE"])
_done = 0
_lock = threading.Lock()
_phase = threading.local()
_phases: list[tuple[float, float, float]] = []


@huey.task()
def scrape_only(term: str, class_nbr: str, latency: float) -> None:
    """The scraper client the check uses (urllib3 + the deadline watchdog), nothing else."""
    get_services().scraper.fetch(term, class_nbr)


_raw = threading.local()


@huey.task()
def scrape_raw(term: str, class_nbr: str, latency: float) -> None:
    """The same call through a plain urllib3 pool (no deadline watchdog, no body cap): what the
    app's client (app.httpdeadline) adds over urllib3 itself."""
    import json

    import urllib3

    scraper = get_services().scraper
    if not hasattr(_raw, "pool"):
        _raw.pool = urllib3.PoolManager(maxsize=8, retries=False)
    resp = _raw.pool.request("POST", scraper.url, headers=scraper.headers, timeout=10,
                             body=json.dumps({"sectionNumber": class_nbr, "term": term}).encode())
    parse_section(json.loads(resp.data))


@huey.task()
def sleep_only(term: str, class_nbr: str, latency: float) -> None:
    """The queue alone: a task that waits as long as the scraper would."""
    time.sleep(latency)


class _SleepScraper:
    """In place of the HTTP client: waits `latency`, answers a section with no seats."""

    def __init__(self, latency: float):
        self.latency = latency

    def fetch(self, term: str, class_nbr: str):
        _phase.fetched = time.perf_counter()
        time.sleep(self.latency)
        _phase.slept = time.perf_counter()
        return parse_section({"success": True, "data": {
            "subject": "CSE", "catalog_nbr": "110", "title": "Principles of Programming",
            "instructor": "Staff", "seats_available": 0, "seats_capacity": 100,
            "non_reserved_seats": None, "location": "BYENG 210", "meeting_times": "MW 10:30AM - 11:45AM"}})


class _Services:
    """The process's services with the scraper swapped (only for the calling task)."""

    def __init__(self, services, scraper):
        self._services, self.scraper = services, scraper

    def __getattr__(self, name):
        return getattr(self._services, name)


@huey.task()
def check_no_scrape(term: str, class_nbr: str, latency: float) -> None:
    """The real check (breaker + running marker round trip, the database transaction, the marker
    freed as the completion signal does) with the HTTP call replaced by a sleep."""
    services = get_services()
    t0 = time.perf_counter()
    check.check_section(_Services(services, _SleepScraper(latency)), term, class_nbr,
                        lambda pipe: services.pending.running(term, class_nbr, pipe))
    t1 = time.perf_counter()
    services.pending.release(term, class_nbr)
    t2 = time.perf_counter()
    with _lock:  # ms: the breaker's Redis round trip, the database transaction, the marker freed
        _phases.append(((_phase.fetched - t0) * 1000, (t1 - _phase.slept) * 1000, (t2 - t1) * 1000))


_COUNTED = (tasks.check_section.task_class, scrape_only.task_class, scrape_raw.task_class, sleep_only.task_class,
            check_no_scrape.task_class)


@huey.signal(SIGNAL_COMPLETE)
def _count(signal, task, *args) -> None:
    global _done
    if not isinstance(task, _COUNTED):
        return
    with _lock:
        _done += 1
        finished = _done % BATCH == 0
        count = _done
    if finished:
        with _lock:
            phases = list(_phases)
            _phases.clear()
        if phases:  # per phase: median and mean, ms
            import json
            import statistics
            huey.storage.conn.set(f"bench:parts_phases:{count}", json.dumps(
                [[statistics.median(p[i] for p in phases), statistics.fmean(p[i] for p in phases)]
                 for i in range(3)]))
        huey.storage.conn.set(f"bench:parts_done:{count}", repr(time.time()))
