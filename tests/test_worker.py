"""The real consumer process (`python -m app worker`) against real Redis and PostgreSQL."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from app import tasks
from app.queue.instance import huey
from app.schedule.catchup import due_slots

TERM = "2261"
# The deploy's read timeout: a stop that waited for the blocking reads would take minutes.
LONG_READ = "300"
# Generous bounds against a hang; the figures themselves are printed (targets: 2 s and 1 s).
STOP_BOUND_SECONDS = 10
PICKUP_BOUND_SECONDS = 5


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


class Worker:
    """One `python -m app worker` process; its output goes to a file (a pipe could fill up)."""

    def __init__(self, *args: str, **env: str):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "worker", *args],
                                     env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)

    def beat(self, services) -> dict | None:
        raw = services.redis.hget(services.keys.heartbeat, os.uname().nodename)
        beat = json.loads(raw) if raw else None
        return beat if beat and beat.get("pid") == self.proc.pid else None

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def start_worker(services):
    huey.storage.flush_all()
    started: list[Worker] = []

    def start(*args: str, catch_up: bool = False, **env: str) -> Worker:
        if not catch_up:  # the latest slots count as run: the test's own cron runs are the ones
            now = datetime.datetime.now(datetime.timezone.utc)
            for _, slot in due_slots(now):
                services.slots.mark_ran(slot, "test")
        w = Worker(*args, **env)
        started.append(w)
        wait_for(lambda: w.beat(services), 20, "the consumer's start-up heartbeat")
        return w

    yield start
    for w in started:
        w.kill()
    huey.storage.flush_all()


@pytest.fixture
def worker(start_worker):
    return start_worker().proc


def test_cron_to_email_through_the_consumer(worker, services, scraper, resend_server, make_watch):
    for nbr in ("12430", "12432", "12434", "12436"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 4
    wait_for(lambda: len(scraper.calls) == 4 and not huey.pending_count(), 20, "baseline checks")
    # Every check done for good (a check still finishing keeps its marker, and the next run would
    # rightly skip it).
    wait_for(lambda: not any(services.pending.is_pending(TERM, n)
                             for n in ("12430", "12432", "12434", "12436")), 10,
             "pending markers cleared")
    for nbr in ("12430", "12432", "12434", "12436"):
        scraper.set_section(TERM, nbr, seats_available=2)
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 4
    wait_for(lambda: len(resend_server.emails) == 4, 20, "four emails")
    assert sorted(e["to"][0] for e in resend_server.emails) == [
        "12430@asu.edu", "12432@asu.edu", "12434@asu.edu", "12436@asu.edu"]


def test_idle_worker_stops_on_sigint_without_waiting_for_its_reads(start_worker, services):
    w = start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    time.sleep(3)  # idle: every worker thread is inside its 300 s blocking read
    code, took = w.stop(timeout=60)
    print(f"idle graceful stop: {took:.2f} s from SIGINT to exit (read timeout {LONG_READ} s)")
    assert code == 0 and took < STOP_BOUND_SECONDS
    assert not services.redis.exists(f"huey.wake.{huey.storage.name}.{os.uname().nodename}."
                                      f"{w.proc.pid}")  # no token left behind


def test_sigint_lets_running_checks_finish(start_worker, services, scraper, make_watch, sql):
    w = start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=1)
    scraper.delay = 1.5  # the check is mid-scrape when the stop arrives
    tasks.enqueue_checks([(TERM, "12430")])
    wait_for(lambda: scraper.calls, 10, "the check to start")
    code, took = w.stop()
    assert code == 0
    # The check finished: its state row was written before the process exited.
    assert sql("select seats_available from class_states where class_nbr = '12430'") == [
        {"seats_available": 1}]
    assert not services.pending.is_pending(TERM, "12430")
    print(f"busy graceful stop: {took:.2f} s (the check had ~1.5 s of scraping left)")


def test_a_stop_loses_no_queued_check_and_runs_none_twice(start_worker, services, scraper,
                                                          make_watch):
    nbrs = [f"1243{i}" for i in range(8)]
    for nbr in nbrs:
        scraper.set_section(TERM, nbr, seats_available=1)
    scraper.delay = 1.0
    w = start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    assert tasks.enqueue_checks([(TERM, n) for n in nbrs]) == 8
    wait_for(lambda: len(scraper.calls) >= 4, 10, "four checks running")
    assert w.stop()[0] == 0
    first = list(scraper.calls)
    assert len(first) == 4  # the 4 workers finished theirs and took nothing more
    assert huey.pending_count() == 4  # the rest still waits on the queue, none dropped
    scraper.delay = 0
    start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    wait_for(lambda: len(scraper.calls) == 8 and not huey.pending_count(), 20, "the rest")
    assert sorted(nbr for _, nbr in scraper.calls) == nbrs  # each exactly once


def test_a_check_enqueued_while_idle_starts_within_a_second(start_worker, services, scraper):
    start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    scraper.set_section(TERM, "12431", seats_available=0)
    time.sleep(3)  # idle inside the long read
    enqueued = time.monotonic()
    tasks.enqueue_checks([(TERM, "12431")])
    wait_for(lambda: scraper.calls, PICKUP_BOUND_SECONDS, "the check to start", step=0.005)
    latency = time.monotonic() - enqueued
    print(f"pickup latency of an idle worker: {latency * 1000:.0f} ms")
    assert latency < PICKUP_BOUND_SECONDS


def test_a_stop_on_one_host_does_not_disturb_another(start_worker, services, scraper):
    """Two consumers on one Redis (the scale-out's shape: one with the scheduler, one `-n`)."""
    main = start_worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    extra = Worker("--no-scheduler", HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        # A worker-only host beats too, and says it runs no scheduler.
        beat = wait_for(lambda: extra.beat(services), 20, "the -n consumer's heartbeat")
        assert beat["scheduler"] is False
        time.sleep(1)
        assert main.stop()[0] == 0
        assert extra.proc.poll() is None  # its reads were not woken, it keeps working
        scraper.set_section(TERM, "12433", seats_available=0)
        tasks.enqueue_checks([(TERM, "12433")])
        wait_for(lambda: scraper.calls, PICKUP_BOUND_SECONDS, "the other host to run the check")
        code, took = extra.stop()
        assert code == 0 and took < STOP_BOUND_SECONDS
    finally:
        extra.kill()


def test_housekeeping_is_on_time_behind_a_backlog_of_slow_checks(start_worker, services, scraper,
                                                                 resend_server, make_watch, sql):
    """60 checks of 1 s each wait for 4 workers (~15 s); the heartbeat, the cron run of the due
    slot and the sweep still happen at start, and health is not unhealthy meanwhile."""
    from app import db
    from app.db import batches, watches
    from app.health import checks
    from app.schedule import cron

    backlog = [(TERM, str(13000 + i)) for i in range(60)]
    for term, nbr in backlog:
        scraper.set_section(term, nbr, seats_available=0)
    scraper.delay = 1.0
    assert tasks.enqueue_checks(backlog) == 60
    _, watch_id = make_watch("late@asu.edu", "12498")  # an email a crashed worker left unsent
    scraper.set_section(TERM, "12498", seats_available=0)
    with db.transaction(services.pool) as conn:
        [nid] = watches.claim_notifications(conn, [watch_id], "seat_available")
        batches.add_batch(conn, "batch-left-behind", "seat_available", [(nid, {
            "from": "PickMyClass <alerts@example.test>", "to": ["late@asu.edu"],
            "subject": "Seat Available", "html": "<p>seat</p>", "text": "seat"})])
    sql("update notification_deliveries set created_at = now() - interval '10 minutes'")
    sql("update delivery_batches set created_at = now() - interval '10 minutes'")

    start_worker(catch_up=True, HUEY_READ_TIMEOUT_SECONDS=LONG_READ)  # returns once it has beaten
    assert huey.pending_count() > 20  # the heartbeat did not wait for the backlog
    wait_for(lambda: cron.last_runs(services)["even"], 10, "the due cron run")  # :00 always due
    wait_for(lambda: resend_server.emails, 10, "the sweep's delivery")
    report = checks.run_checks(services)
    assert huey.pending_count() > 0, "the backlog drained before housekeeping was seen"
    assert report["status"] != "unhealthy", report
    assert report["checks"]["scheduler"]["alive"] is True



def test_the_stop_bound_follows_the_longest_check_not_the_read_timeout():
    import dataclasses

    from app.settings import get_settings
    from app.queue.worker import shutdown_timeout

    base = dataclasses.replace(get_settings(), scraper_timeout=30.0)
    bounds = {shutdown_timeout(dataclasses.replace(base, huey_read_timeout=t)) for t in (1, 60, 300)}
    assert bounds == {120}  # 30 s scrape + 70 s of email retries + 20 s margin
    assert shutdown_timeout(dataclasses.replace(base, scraper_timeout=60.0)) == 150


def test_two_consumers_started_together_run_a_missed_slot_once(start_worker, services, scraper,
                                                               make_watch):
    """Two schedulers (a misconfigured scale-out, or a deploy's old and new process overlapping)
    both catch up this hour's :00 slot at start: the slot marker lets one of them run it."""
    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=0)
    first = Worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        # One heartbeat field per host: let the first beat land before the second's, or it could
        # overwrite the second's start-up beat that start_worker waits for.
        wait_for(lambda: first.beat(services), 20, "the first consumer's start-up heartbeat")
        # Started after `first`: once it has beaten, both schedulers have had their first tick.
        start_worker(catch_up=True, HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
        assert first.proc.poll() is None
        wait_for(lambda: scraper.calls, 20, "the caught-up slot's check")
        time.sleep(2)  # room for a second run, if the slot were not kept to one
        assert scraper.calls == [(TERM, "12430")]
    finally:
        first.kill()
