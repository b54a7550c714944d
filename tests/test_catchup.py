"""No slot skipped: catch-up of each group's latest slot, retries after a held lock or a kill,
a lost Redis noticed, housekeeping off the queue.

Time is injected: a SlotRunner is one consumer process's memory, its `tick(now)` one scheduler
tick at `now`; the last test drives huey's real consumer scheduler with huey's own `now` hook.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from app import tasks
from app.queue.instance import huey
from app.schedule import catchup, cron

HOUR = dt.datetime(2026, 11, 30, 14, 0, tzinfo=dt.timezone.utc)


def at(minute: int, second: int = 0) -> dt.datetime:
    return HOUR.replace(minute=minute, second=second)


def queued(q) -> list[str]:
    return sorted(t.args[1] for t in (q.deserialize_task(m) for m in q.storage.enqueued_items()))


def consumer() -> catchup.SlotRunner:
    """A freshly started consumer's slot memory, running real cron runs."""
    return catchup.SlotRunner(lambda group, now: tasks.run_cron_now(group, now=now))


@pytest.fixture
def watched(make_watch):
    make_watch("even@asu.edu", "12430")
    make_watch("odd@asu.edu", "12431")


def ran(results) -> list[str]:
    return [r["stagger_group"] for r in results if not r.get("skipped")]


@pytest.fixture
def odd_13_ran(services):
    """The previous hour's :30 slot ran on time (the tests below are about this hour's)."""
    services.slots.mark_ran("2026-11-30T13:odd", "test")


def test_due_slots_are_each_groups_latest_whichever_hour():
    assert catchup.due_slots(at(7)) == [("odd", "2026-11-30T13:odd"), ("even", "2026-11-30T14:even")]
    assert catchup.due_slots(at(40)) == [("even", "2026-11-30T14:even"), ("odd", "2026-11-30T14:odd")]
    assert [s for _, s in catchup.due_slots(at(29, 59))] == ["2026-11-30T13:odd", "2026-11-30T14:even"]
    assert [s for _, s in catchup.due_slots(at(30))] == ["2026-11-30T14:even", "2026-11-30T14:odd"]


def test_started_at_minute_7_runs_the_missed_00_slot_once(services, queue, watched, odd_13_ran,
                                                         caplog):
    first = consumer()
    with caplog.at_level(logging.INFO, logger="app.schedule.cron"):
        results = first.tick(at(7))
    assert ran(results) == ["even"] and queued(queue) == ["12430"]
    assert results[-1]["late_seconds"] == 7 * 60
    assert "ran late by 420 s" in caplog.text
    assert cron.last_runs(services)["even"]["late_seconds"] == 420
    # The same process on its next ticks asks Redis nothing: it remembers the slot ran.
    calls = []
    real_ran = services.slots.ran
    services.slots.ran = lambda *a: calls.append(a) or real_ran(*a)
    try:
        assert first.tick(at(8)) == [] and first.tick(at(29)) == [] and calls == []
    finally:
        services.slots.ran = real_ran
    # A second consumer started right after runs nothing: the slot marker says it ran.
    second = consumer()
    assert ran(second.tick(at(7, 30))) == [] and queued(queue) == ["12430"]


def test_started_at_minute_40_runs_30_once_and_leaves_a_run_00_alone(services, queue, watched,
                                                                    odd_13_ran):
    consumer().tick(at(0, 20))  # the :00 slot ran on time
    assert cron.last_runs(services)["even"]["late_seconds"] == 0
    later = consumer()
    results = later.tick(at(40))
    assert ran(results) == ["odd"] and results[-1]["late_seconds"] == 600
    assert queued(queue) == ["12430", "12431"]  # one check each: :00 was not run again
    assert ran(later.tick(at(41))) == [] and ran(consumer().tick(at(41))) == []


def test_both_missed_slots_of_the_hour_run_once_each(services, queue, watched):
    assert ran(consumer().tick(at(45))) == ["even", "odd"]
    assert queued(queue) == ["12430", "12431"]


def test_a_slot_refused_by_a_held_lock_is_retried_within_the_slot(services, queue, watched,
                                                                   odd_13_ran):
    runner = consumer()
    held = services.cron_lock.acquire()
    try:
        assert ran(runner.tick(at(0, 30))) == []  # refused: the slot stays unmarked
        assert queued(queue) == []
    finally:
        services.cron_lock.release(held)
    results = runner.tick(at(1, 30))  # the next tick
    assert ran(results) == ["even"] and queued(queue) == ["12430"]
    assert "late_seconds" not in results[0]  # 90 s after the slot's start: still on time


def test_a_failed_run_is_retried_on_the_next_tick(services, queue, watched, odd_13_ran):
    attempts = []

    def flaky(group, now):
        attempts.append(group)
        if attempts.count("even") == 1 and group == "even":
            raise RuntimeError("database away")
        return tasks.run_cron_now(group, now=now)

    runner = catchup.SlotRunner(flaky)
    assert ran(runner.tick(at(3))) == [] and queued(queue) == []
    assert ran(runner.tick(at(4))) == ["even"] and queued(queue) == ["12430"]


def test_the_consumers_scheduler_catches_up_at_start(services, queue, watched, odd_13_ran,
                                                    monkeypatch):
    """huey's consumer with our scheduler, its first tick at 14:07 (huey's `now` hook)."""
    monkeypatch.setattr(tasks, "_slots", consumer())  # a fresh process's memory
    c = huey.create_consumer(workers=1, periodic=True, scheduler_interval=1)
    try:
        scheduler = c._create_scheduler()
        scheduler.loop(now=at(7).replace(tzinfo=None))
        assert c.housekeeping.join(10)
        assert cron.last_runs(services)["even"]["late_seconds"] == 420
        assert queued(queue) == ["12430"]
        beat = services.heartbeat.beats()[0]
        assert beat["scheduler"] is True  # the heartbeat rode on the same tick
    finally:
        huey.storage.wake_key = None


def test_a_worker_only_consumer_runs_no_cron_but_beats(services, queue, watched, monkeypatch):
    monkeypatch.setattr(tasks, "_slots", consumer())
    c = huey.create_consumer(workers=1, periodic=False, scheduler_interval=1)
    try:
        c._create_scheduler().loop(now=at(7).replace(tzinfo=None))
        assert c.housekeeping.join(10)
        assert cron.last_runs(services)["even"] is None and queued(queue) == []
        assert services.heartbeat.beats()[0]["scheduler"] is False
    finally:
        huey.storage.wake_key = None
