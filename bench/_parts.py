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
_done = 0
_lock = threading.Lock()


@huey.task()
def scrape_only(term: str, class_nbr: str, latency: float) -> None:
    """The scraper client the check uses (urllib3 + the deadline watchdog), nothing else."""
    get_services().scraper.fetch(term, class_nbr)


@huey.task()
def sleep_only(term: str, class_nbr: str, latency: float) -> None:
    """The queue alone: a task that waits as long as the scraper would."""
    time.sleep(latency)


class _SleepScraper:
    """In place of the HTTP client: waits `latency`, answers a section with no seats."""

    def __init__(self, latency: float):
        self.latency = latency

    def fetch(self, term: str, class_nbr: str):
        time.sleep(self.latency)
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
    check.check_section(_Services(services, _SleepScraper(latency)), term, class_nbr,
                        lambda pipe: services.pending.running(term, class_nbr, pipe))
    services.pending.release(term, class_nbr)


_COUNTED = (tasks.check_section.task_class, scrape_only.task_class, sleep_only.task_class,
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
        huey.storage.conn.set(f"bench:parts_done:{count}", repr(time.time()))
