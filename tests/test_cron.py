"""Cron runs and the queue: slot markers, the lock, enqueue dedup, retries and dead letters."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from app import tasks
from app.queue.instance import huey
from app.schedule import cron

AT_00 = dt.datetime(2026, 11, 30, 14, 0, 5, tzinfo=dt.timezone.utc)
AT_30 = AT_00.replace(minute=30)
FAR_FUTURE = dt.datetime(2100, 1, 1)


def run(services, **kw):
    return cron.run_cron(services, tasks.enqueue_checks, **kw)


def due_now(q):
    """The next scheduled task, made due now (huey re-schedules a task whose eta is ahead)."""
    scheduled = q.read_schedule(FAR_FUTURE)
    for task in scheduled:
        task.eta = None
    return scheduled


def queued_sections(q) -> list[tuple[str, str]]:
    return sorted(tuple(t.args[:2]) for t in (q.deserialize_task(m) for m in q.storage.enqueued_items()))


def test_group_by_minute():
    assert cron.group_for(AT_00) == "even" and cron.group_for(AT_00.replace(minute=29)) == "even"
    assert cron.group_for(AT_30) == "odd" and cron.group_for(AT_00.replace(minute=59)) == "odd"


def test_a_run_enqueues_one_check_per_section_of_its_group(services, queue, make_watch):
    make_watch("a@asu.edu", "12430")
    make_watch("b@asu.edu", "12430")  # two watchers, one section
    make_watch("c@asu.edu", "12432", term="2264")
    make_watch("d@asu.edu", "12431")  # odd
    result = run(services, now=AT_00)
    assert result["success"] and result["stagger_group"] == "even"
    assert result["sections_enqueued"] == 2 and isinstance(result["duration"], int)
    assert queued_sections(queue) == [("2261", "12430"), ("2264", "12432")]
    odd = run(services, now=AT_30)
    assert odd["stagger_group"] == "odd" and odd["sections_enqueued"] == 1
    assert cron.last_runs(services)["even"]["sections_enqueued"] == 2


def test_no_sections_says_so(services, queue):
    result = run(services, now=AT_00)
    assert result["sections_enqueued"] == 0 and result["message"] == "No sections to check"


def test_second_trigger_in_the_same_slot_does_nothing(services, queue, make_watch):
    make_watch("a@asu.edu", "12430")
    assert run(services, now=AT_00)["sections_enqueued"] == 1
    huey.storage.flush_queue()
    services.pending.release("2261", "12430")
    again = run(services, now=AT_00.replace(minute=12))
    assert again["skipped"] and again["sections_enqueued"] == 0
    assert queued_sections(queue) == []
    # The next hour is a new slot.
    assert run(services, now=AT_00 + dt.timedelta(hours=1))["sections_enqueued"] == 1


def test_two_schedulers_racing_run_the_slot_once(services, queue, make_watch):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
    results, barrier = [], threading.Barrier(4)

    def trigger():
        barrier.wait()
        try:
            results.append(run(services, now=AT_00))
        except cron.CronLocked:
            results.append("locked")

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One ran; the others found its lock (a scheduler retries on its next tick) or its marker.
    enqueued = [r["sections_enqueued"] for r in results if isinstance(r, dict)]
    assert sum(enqueued) == 3 and len([e for e in enqueued if e]) == 1
    assert all(r == "locked" or r["sections_enqueued"] == 3 or r.get("skipped") for r in results)
    assert len(queued_sections(queue)) == 3


def test_a_held_lock_refuses_and_gives_the_slot_back(services, queue, make_watch):
    make_watch("a@asu.edu", "12430")
    held = services.cron_lock.acquire()
    with pytest.raises(cron.CronLocked) as refused:
        run(services, now=AT_00)
    assert refused.value.status["locked"] is True
    services.cron_lock.release(held)
    assert run(services, now=AT_00)["sections_enqueued"] == 1  # the slot was not burnt


def test_a_failed_run_gives_the_slot_back_and_the_lock_up(services, queue, make_watch):
    make_watch("a@asu.edu", "12430")

    def broken_enqueue(sections, **kw):
        raise RuntimeError("redis went away")

    with pytest.raises(RuntimeError):
        cron.run_cron(services, broken_enqueue, now=AT_00)
    assert services.cron_lock.status()["locked"] is False
    assert run(services, now=AT_00)["sections_enqueued"] == 1


def test_pending_checks_are_not_enqueued_twice_but_finished_ones_are(
        services, queue, make_watch, scraper):
    make_watch("a@asu.edu", "12430")
    scraper.set_section("2261", "12430", seats_available=0)
    assert run(services, now=AT_00)["sections_enqueued"] == 1
    # Still waiting: a forced run (or the next hour) skips it.
    forced = run(services, now=AT_00, force=True)
    assert forced["sections_enqueued"] == 0 and forced["sections_found"] == 1
    assert len(queued_sections(queue)) == 1
    task = queue.dequeue()
    queue.execute(task)  # the check completes
    assert not services.pending.is_pending("2261", "12430")
    assert run(services, now=AT_00 + dt.timedelta(hours=1))["sections_enqueued"] == 1


def test_a_failing_check_is_retried_then_dead_lettered(services, queue, make_watch, scraper):
    make_watch("a@asu.edu", "12430")
    scraper.set_raw("2261", "12430", 200, b"<html>not json</html>", "text/html")
    run(services, now=AT_00)
    task = queue.dequeue()
    attempts = 0
    while task is not None:
        queue.execute(task)
        attempts += 1
        scheduled = due_now(queue)
        task = scheduled[0] if scheduled else None
        if task is not None:
            assert task.retry_delay >= 30  # with backoff: 30, 60, 120 s between attempts
    assert attempts == 4  # the first try and 3 retries
    [letter] = services.dead_letters.list()
    assert letter["class_nbr"] == "12430" and "not valid JSON" in letter["reason"]
    assert not services.pending.is_pending("2261", "12430")


def test_breaker_refusals_wait_without_using_retries(services, queue, make_watch, scraper):
    make_watch("a@asu.edu", "12430")
    scraper.set_section("2261", "12430", seats_available=1)
    # Queued now (by hand: its next slot is an hour away, so the refusals are not superseded).
    assert tasks.enqueue_checks([("2261", "12430")]) == 1
    for _ in range(10):
        services.breaker.record_failure()
    task = queue.dequeue()
    for _ in range(5):  # refused again and again: still rescheduled, never dead
        queue.execute(task)
        [task] = due_now(queue)
        assert task.retries == tasks.CHECK_RETRIES
    assert services.dead_letters.count() == 0 and scraper.calls == []
    assert services.pending.is_pending("2261", "12430")
    services.breaker.reset()
    queue.execute(task)
    assert scraper.calls == [("2261", "12430")]
    assert not services.pending.is_pending("2261", "12430")


def test_a_refused_check_older_than_the_next_run_is_dropped(services, queue, scraper):
    services.pending.claim([("2261", "12430")])
    for _ in range(10):
        services.breaker.record_failure()
    stale = tasks.check_section.s("2261", "12430", 0.0)  # enqueued long ago
    queue.execute(stale)
    assert queue.read_schedule(FAR_FUTURE) == []
    assert not services.pending.is_pending("2261", "12430")


def test_dead_letters_can_be_requeued(services, queue):
    services.dead_letters.add("2261", "12431", "scraper: HTTP 500", attempts=4)
    from app.__main__ import main

    assert main(["dead-letters", "--requeue"]) == 0
    assert services.dead_letters.count() == 0
    assert queued_sections(queue) == [("2261", "12431")]


def test_housekeeping_rides_on_the_scheduler_not_the_queue():
    """Cron slots and the sweep run on the scheduler host's tick, the heartbeat on every host;
    none of them is a queued (or periodic) task that could wait behind checks."""
    jobs = {j.name: j for j in huey.housekeeping}
    assert jobs["cron_slots"].scheduler_only and jobs["cron_slots"].every == 0
    assert jobs["sweep_undelivered"].scheduler_only and jobs["sweep_undelivered"].every == 300
    assert not jobs["heartbeat"].scheduler_only
    assert huey._registry.periodic_tasks == []


def test_cli_cron_and_check_print_json(services, queue, make_watch, scraper, capsys):
    import json

    from app.__main__ import main

    make_watch("a@asu.edu", "12430")
    scraper.set_section("2261", "12430", seats_available=2)
    assert main(["cron", "--group", "even"]) == 0
    assert json.loads(capsys.readouterr().out)["sections_enqueued"] == 1
    assert main(["check", "2261", "12430"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["baseline"] is True and found["open_seats"] == 2
    held = services.cron_lock.acquire()
    assert main(["cron", "--group", "even", "--force"]) == 3
    assert "holds the lock" in capsys.readouterr().err
    services.cron_lock.release(held)
