"""No slot ever skipped: cron runs that survive kills, hour boundaries, early manual runs, a backlog
and a wiped Redis, and health that sees a dead scheduler behind a worker-only host's beat.

The real cron function runs in real processes (SIGKILLed where it hurts) and in this one, with the
clock injected (the ticks' `now`); `python -m app worker` runs the checks. Where Redis's own clock
would have to pass (a TTL, a heartbeat's age), the test writes what that much time leaves behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from app import tasks
from app.__main__ import main
from app.health import checks
from app.queue.instance import huey
from app.schedule import catchup, cron
from tests.test_worker import LONG_READ, Worker, wait_for

TERM = "2261"
HOUR = dt.datetime(2026, 11, 30, 14, 0, tzinfo=dt.timezone.utc)


def at(hour: int, minute: int, second: int = 0) -> dt.datetime:
    return HOUR.replace(hour=hour, minute=minute, second=second)


@pytest.fixture
def watched(make_watch, scraper):
    for nbr in ("12430", "12432", "12431"):
        make_watch(f"{nbr}@asu.edu", nbr)
        scraper.set_section(TERM, nbr, seats_available=0)


def queued(q) -> list[str]:
    return sorted(t.args[1] for t in (q.deserialize_task(m) for m in q.storage.enqueued_items()))


def runner(services, lost=None) -> catchup.SlotRunner:
    """A freshly started scheduler's slot memory, running the real cron function."""
    def run(group, now):
        return tasks.run_cron_now(group, now=now)

    return catchup.SlotRunner(run) if lost is None else catchup.SlotRunner(run, lost=lost)


def slot_ran(services, slot: str) -> None:
    """The slot's marker, as a run that finished leaves it."""
    services.redis.set(services.keys.cron_slot(slot), "test", ex=2 * 3600)


def marked(services, slot: str) -> bool:
    return bool(services.redis.exists(services.keys.cron_slot(slot)))


def an_hour_passes(services, key: str) -> None:
    """What an hour does to a key's TTL (Redis's clock cannot be injected)."""
    left = services.redis.ttl(key) - 3600
    if left > 0:
        services.redis.expire(key, left)
    else:
        services.redis.delete(key)


def ran(results) -> list[str]:
    return [r["slot"] for r in results if not r.get("skipped")]


def cron_process(now: dt.datetime, die_after_enqueue: bool = False) -> subprocess.Popen:
    """The real cron function in a process of its own, at `now`; optionally SIGKILLed by itself
    right after its checks reached the queue (before it could mark the slot)."""
    code = textwrap.dedent(f"""
        import datetime as dt, os, signal
        from app import tasks
        from app.schedule import cron
        from app.services import get_services

        def enqueue(sections, slot):
            n = tasks.enqueue_checks(sections, slot=slot)
            if {die_after_enqueue!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            return n

        now = dt.datetime.fromisoformat({now.isoformat()!r})
        print(cron.run_cron(get_services(), enqueue, group="even", now=now))
    """)
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@contextlib.contextmanager
def sections_held(database):
    """Hold a cron run at its query of the watched sections (an exclusive lock on class_watches);
    yields a function that returns once a run waits there. Released on leaving."""
    blocker = psycopg.connect(database)
    blocker.execute("lock table public.class_watches in access exclusive mode")

    def wait_for_the_run():
        wait_for(lambda: blocker.execute(
            "select count(*) from pg_locks where not granted"
            " and relation = 'public.class_watches'::regclass").fetchone()[0], 20,
            "the cron run to wait for its sections")

    try:
        yield wait_for_the_run
    finally:
        blocker.rollback()
        blocker.close()


# --- a run killed half way ------------------------------------------------------------------------

def test_a_run_sigkilled_before_its_enqueue_is_run_again_by_the_next_tick(
        services, queue, watched, database):
    slot_ran(services, "2026-11-30T13:odd")  # the previous hour's odd slot ran
    with sections_held(database) as wait_for_the_run:  # between the run's start and its enqueue
        proc = cron_process(at(14, 0, 5))
        wait_for_the_run()
        assert services.cron_lock.status()["locked"]  # it got that far: it holds the lock
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # Visible while it lasts: the lock of a dead run, no record of the slot.
    assert services.cron_lock.status()["locked"] and cron.last_runs(services)["even"] is None
    assert queued(queue) == []
    results = runner(services).tick(at(14, 2))  # the next tick, two minutes after the slot
    assert ran(results) == ["2026-11-30T14:even"] and results[-1]["late_seconds"] == 120
    assert queued(queue) == ["12430", "12432"]
    assert cron.last_runs(services)["even"]["late_seconds"] == 120
    # Once: the next scheduler's tick finds the slot run.
    assert ran(runner(services).tick(at(14, 3))) == [] and queued(queue) == ["12430", "12432"]


def test_cli_cron_sigkilled_mid_run_then_the_restarted_worker_runs_the_slot(
        services, queue, make_watch, scraper, database):
    """The real clock end to end: `python -m app cron` killed while it waits for its sections,
    then `python -m app worker` starting (PM2's restart) runs the slot at its first tick."""
    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=0)
    with sections_held(database) as wait_for_the_run:
        proc = subprocess.Popen([sys.executable, "-m", "app", "cron", "--group", "even"],
                                env=dict(os.environ), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_the_run()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert services.cron_lock.status()["locked"] and cron.last_runs(services)["even"] is None
    worker = Worker(HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        wait_for(lambda: scraper.calls, 20, "the slot's check")
        record = wait_for(lambda: cron.last_runs(services)["even"], 10, "the slot's record")
        assert record["slot"].endswith(":even") and record["sections_enqueued"] == 1
        time.sleep(1)  # room for a second run, if the slot were not kept to one
        assert scraper.calls == [(TERM, "12430")]
    finally:
        worker.kill()


def test_a_run_killed_between_its_enqueue_and_its_marker_queues_nothing_twice(
        services, queue, watched):
    slot_ran(services, "2026-11-30T13:odd")
    proc = cron_process(at(14, 0, 5), die_after_enqueue=True)
    assert proc.wait(30) == -signal.SIGKILL, proc.stdout.read()
    assert queued(queue) == ["12430", "12432"] and not marked(services, "2026-11-30T14:even")
    results = runner(services).tick(at(14, 1, 30))
    assert ran(results) == ["2026-11-30T14:even"]
    assert results[-1]["sections_enqueued"] == 0  # already waiting: no second copy
    assert queued(queue) == ["12430", "12432"] and marked(services, "2026-11-30T14:even")


# --- across the hour, after a long outage ---------------------------------------------------------

def test_a_consumer_started_at_14_02_runs_the_13_30_slot_it_missed_once(
        services, queue, watched, monkeypatch):
    """huey's consumer with our scheduler, its first tick at 14:02 (huey's `now` hook)."""
    slot_ran(services, "2026-11-30T14:even")  # 14:00 ran before the consumer died
    monkeypatch.setattr(tasks, "_slots", runner(services))  # a fresh process's memory
    c = huey.create_consumer(workers=1, periodic=True, scheduler_interval=1)
    try:
        scheduler = c._create_scheduler()
        scheduler.loop(now=at(14, 2).replace(tzinfo=None))
        assert c.housekeeping.join(10)
        scheduler.loop(now=at(14, 3).replace(tzinfo=None))  # the next tick runs nothing more
        assert c.housekeeping.join(10)
    finally:
        huey.storage.wake_key = None
    odd = cron.last_runs(services)["odd"]
    assert odd["slot"] == "2026-11-30T13:odd" and odd["late_seconds"] == 32 * 60
    assert queued(queue) == ["12431"]
    assert ran(runner(services).tick(at(14, 4))) == []  # nor does another scheduler


def test_after_a_long_outage_each_group_runs_once_not_once_per_missed_slot(
        services, queue, watched, caplog):
    with caplog.at_level(logging.INFO, logger="app.schedule.cron"):
        results = runner(services).tick(at(17, 45))  # down since 14:00
    assert ran(results) == ["2026-11-30T17:even", "2026-11-30T17:odd"]
    assert [r["late_seconds"] for r in results] == [45 * 60, 15 * 60]
    assert queued(queue) == ["12430", "12431", "12432"]
    assert caplog.text.count("cron run ") == 2


# --- an early manual run -----------------------------------------------------------------------

def test_cron_group_odd_at_14_10_leaves_the_14_30_slot_to_run_on_time(
        services, queue, watched, capsys):
    sched = runner(services)
    assert ran(sched.tick(at(14, 0, 20))) == ["2026-11-30T13:odd", "2026-11-30T14:even"]
    huey.storage.flush_queue()
    services.pending.release_many([(TERM, n) for n in ("12430", "12431", "12432")])
    # What `python -m app cron --group odd` and /api/cron?group=odd run, at 14:10: the latest odd
    # slot that has started (13:30), which already ran; never the 14:30 one ahead.
    early = tasks.run_cron_now("odd", now=at(14, 10))
    assert early["slot"] == "2026-11-30T13:odd" and early["skipped"]
    forced = tasks.run_cron_now("odd", now=at(14, 10), force=True)  # an extra run: takes no slot
    assert forced["slot"] == "2026-11-30T13:odd" and forced["sections_enqueued"] == 1
    huey.storage.flush_queue()
    services.pending.release_many([(TERM, "12431")])
    on_time = sched.tick(at(14, 30, 20))
    assert ran(on_time) == ["2026-11-30T14:odd"] and "late_seconds" not in on_time[-1]
    assert queued(queue) == ["12431"]
    # The CLI on the real clock: never a slot that has not started.
    assert main(["cron", "--group", "odd"]) == 0
    slot = json.loads(capsys.readouterr().out)["slot"]
    started = dt.datetime.strptime(slot, "%Y-%m-%dT%H:odd").replace(minute=30, tzinfo=dt.timezone.utc)
    assert started <= dt.datetime.now(dt.timezone.utc)


# --- a backlog past the next slot ---------------------------------------------------------------

def test_a_backlog_past_the_next_slot_never_holds_two_copies_of_a_section(
        services, queue, watched, scraper):
    for slot in ("13:odd", "14:odd", "15:odd"):  # the odd group is not what this is about
        slot_ran(services, f"2026-11-30T{slot}")
    sched = runner(services)
    assert ran(sched.tick(at(14, 0, 20))) == ["2026-11-30T14:even"]
    key = services.keys.pending(TERM, "12430")
    # The marker outlives the hour to the section's next slot...
    assert services.redis.ttl(key) > 3600
    # ...and is renewed by that slot while the check still waits.
    for hour in (15, 16):
        an_hour_passes(services, key)
        an_hour_passes(services, services.keys.pending(TERM, "12432"))
        results = sched.tick(at(hour, 0, 20))
        assert ran(results) == [f"2026-11-30T{hour}:even"]
        assert results[-1]["sections_enqueued"] == 0
        assert results[-1]["message"] == "Every section is already waiting or running"
        assert queued(queue) == ["12430", "12432"]  # one copy each, still
        assert services.redis.ttl(key) > 3600
    drained = Worker("--no-scheduler", HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        wait_for(lambda: len(scraper.calls) == 2 and not huey.pending_count(), 20, "the backlog")
        wait_for(lambda: not services.pending.is_pending(TERM, "12430"), 10, "its marker")
    finally:
        drained.kill()
    assert sorted(n for _, n in scraper.calls) == ["12430", "12432"]  # each checked once


def test_a_refused_check_whose_retry_would_pass_its_next_slot_is_dropped_as_superseded(
        services, queue, caplog):
    services.pending.claim([(TERM, "12430")])
    for _ in range(10):
        services.breaker.record_failure()
    slot = "2026-11-30T14:even"  # its next slot (15:00) has come
    with caplog.at_level(logging.WARNING, logger="app.tasks"):
        queue.execute(tasks.check_section.s(TERM, "12430", time.time() - 60, slot))
    assert queue.read_schedule(dt.datetime(2100, 1, 1)) == []  # not retried
    assert not services.pending.is_pending(TERM, "12430")  # the next run queues it afresh
    assert services.redis.hget(services.keys.slot_stats(slot), "superseded") == "1"
    assert "superseded" in caplog.text
    # Queued by hand just now, the same refusal waits for the breaker instead.
    assert tasks.enqueue_checks([(TERM, "12430")]) == 1
    queue.execute(queue.dequeue())
    assert len(queue.read_schedule(dt.datetime(2100, 1, 1))) == 1
    assert services.pending.is_pending(TERM, "12430")


# --- a Redis that lost its data ---------------------------------------------------------------

def test_flushall_under_a_running_scheduler_runs_the_slot_again_within_the_bound(
        services, queue, watched, scraper):
    from app.schedule.sentinel import DataSentinel

    sentinel = DataSentinel(services.redis, services.keys.prefix + "sentinel:test")
    slot_ran(services, "2026-11-30T13:odd")
    sched = runner(services, lost=sentinel.lost)
    check_worker = Worker("--no-scheduler", HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        assert ran(sched.tick(at(14, 0, 20))) == ["2026-11-30T14:even"]
        wait_for(lambda: len(scraper.calls) == 2, 20, "the slot's checks")
        wait_for(lambda: not huey.pending_count() and not services.pending.is_pending(TERM, "12432")
                 and not services.pending.is_pending(TERM, "12430"), 10, "the checks to finish")
        services.redis.flushall()  # at 14:01: a restart without its data, a failover
        loss = at(14, 1)
        # Visible while it lasts: no heartbeat at all, no record of the slot.
        report = checks.run_checks(services)
        assert report["checks"]["scheduler"]["alive"] is False
        rerun_at = None
        for minute in range(2, 10):  # the scheduler's minutely ticks
            results = sched.tick(at(14, minute, 20))
            if ran(results):
                rerun_at = at(14, minute, 20)
                break
        assert rerun_at is not None and rerun_at - loss <= dt.timedelta(minutes=5)
        # Both groups' latest slots: their markers went with the rest (13:odd's too).
        assert ran(results) == ["2026-11-30T13:odd", "2026-11-30T14:even"]
        wait_for(lambda: len(scraper.calls) == 5, 20, "the slots' checks, again")
        assert sorted(n for _, n in scraper.calls) == ["12430", "12430", "12431", "12432", "12432"]
        assert cron.last_runs(services)["even"]["slot"] == "2026-11-30T14:even"
        # Once: the next ticks leave it alone.
        assert ran(sched.tick(at(14, 20))) == [] and ran(sched.tick(at(14, 25))) == []
    finally:
        check_worker.kill()


def restart_redis_without_its_data(services, config: dict) -> None:
    """SHUTDOWN NOSAVE and start it again empty: this test run's own Redis (TEST_REDIS_URL),
    with its own directory and log file (`config`: CONFIG GET of them, read while it was up)."""
    from urllib.parse import urlsplit

    port = urlsplit(os.environ["REDIS_URL"]).port
    if _pings(services):
        try:
            services.redis.shutdown(nosave=True)
        except Exception:
            pass  # the connection drops as it stops
    args = ["--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", config["dir"]]
    if config.get("logfile"):
        args += ["--logfile", config["logfile"]]
    subprocess.run(["redis-server", *args], check=True, stdout=subprocess.DEVNULL)
    wait_for(lambda: _pings(services), 10, "Redis to be back")


def _pings(services) -> bool:
    try:
        return services.redis.ping()
    except Exception:
        return False


def test_a_redis_restarted_without_its_data_runs_the_slot_again(services, queue, watched, scraper):
    from app.schedule.sentinel import DataSentinel

    sentinel = DataSentinel(services.redis, services.keys.prefix + "sentinel:test")
    config = {**services.redis.config_get("dir"), **services.redis.config_get("logfile")}
    sched = runner(services, lost=sentinel.lost)
    check_worker = Worker("--no-scheduler", HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        assert ran(sched.tick(at(14, 30, 20))) == ["2026-11-30T14:even", "2026-11-30T14:odd"]
        wait_for(lambda: len(scraper.calls) == 3, 20, "the slots' checks")
        wait_for(lambda: not huey.pending_count() and not any(
            services.pending.is_pending(TERM, n) for n in ("12430", "12431", "12432")), 10,
            "the checks to finish")
        restart_redis_without_its_data(services, config)  # at 14:31
        assert ran(sched.tick(at(14, 32, 20))) == []  # not noticed yet: the probe is due at 14:33:20
        assert ran(sched.tick(at(14, 33, 20))) == ["2026-11-30T14:even", "2026-11-30T14:odd"]
        wait_for(lambda: len(scraper.calls) == 6, 30, "the slots' checks, again")
        assert sorted(n for _, n in scraper.calls) == ["12430", "12430", "12431", "12431",
                                                       "12432", "12432"]
    finally:
        check_worker.kill()
        if not _pings(services):
            restart_redis_without_its_data(services, config)


def test_a_redis_that_came_back_from_an_older_copy_is_noticed(services):
    from app.schedule.sentinel import DataSentinel

    sentinel = DataSentinel(services.redis, services.keys.prefix + "sentinel:test")
    assert sentinel.lost() is False  # the first call only writes
    before = services.redis.get(sentinel.key)
    assert sentinel.lost() is False
    services.redis.set(sentinel.key, before)  # the RDB snapshot of minutes ago
    assert sentinel.lost() is True
    assert sentinel.lost() is False


# --- health and status see a dead scheduler -------------------------------------------------------

class NamedWorker(Worker):
    def __init__(self, host: str, *args: str):
        self.host = host
        super().__init__(*args, SEATWATCH_HOSTNAME=host, HUEY_READ_TIMEOUT_SECONDS=LONG_READ)

    def beat(self, services) -> dict | None:
        raw = services.redis.hget(services.keys.heartbeat, self.host)
        beat = json.loads(raw) if raw else None
        return beat if beat and beat.get("pid") == self.proc.pid else None


def test_a_worker_only_hosts_beat_never_hides_a_dead_scheduler(services, queue, capsys):
    scheduler = NamedWorker("primary-t15")
    extra = NamedWorker("worker-t15", "--no-scheduler")
    try:
        beat = wait_for(lambda: scheduler.beat(services), 20, "the scheduler's beat")
        assert beat["scheduler"] is True
        assert wait_for(lambda: extra.beat(services), 20, "the extra's beat")["scheduler"] is False
        assert checks.run_checks(services)["checks"]["scheduler"]["alive"] is True
        scheduler.proc.send_signal(signal.SIGKILL)
        scheduler.proc.wait(10)
        # 40 minutes later: its last beat is that old; the worker-only host beat just now.
        beat["at"] -= 40 * 60
        services.redis.hset(services.keys.heartbeat, "primary-t15", json.dumps(beat))
        report = checks.run_checks(services)
        s = report["checks"]["scheduler"]
        assert report["status"] == "unhealthy" and s["status"] == "unhealthy"
        assert s["alive"] is False and s["host"] == "primary-t15" and s["age_seconds"] >= 2400
        assert "worker-only hosts beat: worker-t15" in s["reason"]
        assert main(["status"]) == 1  # not healthy
        out = capsys.readouterr().out
        assert "scheduler DEAD: last scheduler heartbeat" in out and "status unhealthy" in out
    finally:
        scheduler.kill()
        extra.kill()


def beat_as(services, host: str, up_minutes: float, scheduler: bool = True) -> None:
    now = time.time()
    services.redis.hset(services.keys.heartbeat, host, json.dumps(
        {"at": now, "release": "t15", "pid": 1, "started": now - up_minutes * 60,
         "scheduler": scheduler}))


def test_a_missing_run_record_after_70_minutes_of_uptime_is_overdue(services, capsys):
    beat_as(services, "primary-t15", up_minutes=30)
    report = checks.run_checks(services)
    assert report["checks"]["cron"] == {"status": "healthy", "even": None, "odd": None}
    beat_as(services, "primary-t15", up_minutes=71)  # up 71 min, no record (expired, never
    # written, or Redis lost it)
    cron_check = checks.run_checks(services)["checks"]["cron"]
    assert cron_check["status"] == "degraded"
    assert cron_check["reason"].startswith("cron overdue: even (no record of a run")
    assert main(["status"]) == 1  # not healthy
    assert "degraded: cron overdue: even" in capsys.readouterr().out
    # A worker-only host up for days says nothing about the schedule.
    services.redis.delete(services.keys.heartbeat)
    beat_as(services, "worker-t15", up_minutes=3000, scheduler=False)
    beat_as(services, "primary-t15", up_minutes=10)
    assert checks.run_checks(services)["checks"]["cron"]["status"] == "healthy"


# --- scrape order on one clock ----------------------------------------------------------------

def test_a_worker_whose_clock_is_10_minutes_fast_cannot_make_a_real_opening_look_stale(
        services, scraper, resend_server, make_watch, monkeypatch):
    from app.check import run as check

    real_time = time.time

    class FastClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + dt.timedelta(minutes=10)

    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=0)
    with monkeypatch.context() as fast:  # host A: its clock 10 minutes ahead
        fast.setattr(check, "datetime", FastClock, raising=False)
        fast.setattr(time, "time", lambda: real_time() + 600)
        assert check.check_section(services, TERM, "12430").baseline
    scraper.set_section(TERM, "12430", seats_available=2)  # a real opening, seen by host B
    seen = check.check_section(services, TERM, "12430")
    assert not seen.stale and seen.changes == ["seat_available"] and seen.delivered == 1
    assert len(resend_server.to("a@asu.edu")) == 1


def test_with_the_scheduler_off_on_purpose_health_asks_only_for_a_consumer(
        services, queue, monkeypatch, capsys):
    """SEATWATCH_SCHEDULER=off (the cutover's zero-overlap step): the worker runs no schedule, and
    health wants a live consumer, not a scheduler (the deploy's gate and cutover-check pass)."""
    import dataclasses

    off = Worker(SEATWATCH_SCHEDULER="off", HUEY_READ_TIMEOUT_SECONDS=LONG_READ)
    try:
        beat = wait_for(lambda: off.beat(services), 20, "its beat")
        assert beat["scheduler"] is False
        time.sleep(0.5)
        assert cron.last_runs(services) == {"even": None, "odd": None}  # it scheduled nothing
        on_purpose = checks.run_checks(services)["checks"]
        monkeypatch.setattr(services, "settings", dataclasses.replace(services.settings,
                                                                      scheduler=False))
        off_here = checks.run_checks(services)
        assert main(["status"]) == 0
    finally:
        off.kill()
    # Where a scheduler is expected, a worker-only beat is not one...
    assert on_purpose["scheduler"]["status"] == "unhealthy"
    assert on_purpose["scheduler"]["reason"].startswith("no scheduler heartbeat")
    # ...where it is off on purpose, any live consumer will do.
    s = off_here["checks"]["scheduler"]
    assert s["status"] == "healthy" and s["alive"] and s["scheduler"] == "off"
    assert s["age_seconds"] < 60 and off_here["checks"]["cron"]["status"] == "healthy"
    assert "scheduler off here (SEATWATCH_SCHEDULER=off); consumers alive" in capsys.readouterr().out


def test_a_bad_scheduler_switch_names_the_variable_not_its_value():
    from app.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as bad:
        Settings.from_env({**os.environ, "SEATWATCH_SCHEDULER": "maybe-later"})
    assert "SEATWATCH_SCHEDULER" in str(bad.value) and "maybe-later" not in str(bad.value)
    assert Settings.from_env({**os.environ, "SEATWATCH_SCHEDULER": "Off"}).scheduler is False
    assert Settings.from_env({k: v for k, v in os.environ.items()
                              if k != "SEATWATCH_SCHEDULER"}).scheduler is True
