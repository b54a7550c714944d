"""The real consumer process (`python -m app worker`) against real Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from app import tasks
from app.queue import huey

TERM = "2261"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker(services):
    huey.storage.flush_all()
    proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: services.heartbeat.latest()[1], 20, "the consumer's start-up heartbeat")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        huey.storage.flush_all()


def test_cron_to_email_through_the_consumer(worker, services, scraper, resend_server, make_watch):
    for nbr in ("12430", "12432", "12434", "12436"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)
    assert tasks.run_cron_now("even")["sections_enqueued"] == 4
    wait_for(lambda: len(scraper.calls) == 4 and not huey.pending_count(), 20, "baseline checks")
    wait_for(lambda: not any(services.pending.is_pending(TERM, n) for n in ("12430", "12436")), 10,
             "pending markers cleared")
    for nbr in ("12430", "12432", "12434", "12436"):
        scraper.set_section(TERM, nbr, seats_available=2)
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 4
    wait_for(lambda: len(resend_server.emails) == 4, 20, "four emails")
    assert sorted(e["to"][0] for e in resend_server.emails) == [
        "12430@asu.edu", "12432@asu.edu", "12434@asu.edu", "12436@asu.edu"]


def test_sigint_lets_running_checks_finish(worker, services, scraper, make_watch, sql):
    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=1)
    scraper.delay = 1.5  # the check is mid-scrape when the stop arrives
    tasks.enqueue_checks([(TERM, "12430")])
    wait_for(lambda: scraper.calls, 10, "the check to start")
    started = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=30) == 0
    took = time.monotonic() - started
    # The check finished: its state row was written before the process exited.
    assert sql("select seats_available from class_states where class_nbr = '12430'") == [
        {"seats_available": 1}]
    assert not services.pending.is_pending(TERM, "12430")
    print(f"graceful stop took {took:.1f}s (read timeout {services.settings.huey_read_timeout}s)")
