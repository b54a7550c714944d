"""Capacity you can see: slot figures from real checks, throughput, drain time, overrun, status."""

from __future__ import annotations

import datetime as dt
import logging
import time

import psycopg

from app import tasks
from app.check.run import check_section
from app.health import checks
from app.queue.instance import huey
from app.schedule import capacity

TERM = "2261"
NOW = dt.datetime.now(dt.timezone.utc)
MINUTE_7 = NOW.replace(minute=7, second=0, microsecond=0)  # a slot run 7 minutes late


def drain(q) -> None:
    """Run what is queued as a worker would, each on its last attempt (a failure dead-letters)."""
    while q.pending_count():
        task = q.dequeue()
        task.retries = 0
        q.execute(task)


def stats(services, when: dt.datetime = MINUTE_7) -> dict:
    return capacity.report(services.redis, services.keys, huey.storage.queue_key, now=when)


def test_a_slot_counts_its_checks_and_logs_when_finished(services, queue, scraper, resend_server,
                                                         make_watch, caplog, database):
    for nbr in ("12430", "12432", "12434"):
        make_watch(f"{nbr}@asu.edu", nbr)
    for nbr in ("12430", "12432"):
        scraper.set_section(TERM, nbr, seats_available=0)
        check_section(services, TERM, nbr)  # baselines, an hour before the slot
    with psycopg.connect(database, autocommit=True) as conn:  # (checks in the slot's hour count for it)
        conn.execute("set session_replication_role = replica")  # the trigger would stamp now()
        conn.execute("update public.class_states set last_checked_at = last_checked_at - interval '2 hours'")
        conn.execute("update public.seatwatch_section_states set scraped_at = scraped_at - interval '2 hours'")
    scraper.set_section(TERM, "12430", seats_available=2)  # opens: one email
    # 12434 is unknown to the scraper: its check fails every attempt
    with caplog.at_level(logging.INFO, logger="app"):
        run = tasks.run_cron_now("even", now=MINUTE_7)
        assert run["sections_enqueued"] == 3 and run["late_seconds"] == 420
        assert stats(services)["groups"]["even"]["remaining"] == 3
        drain(queue)
    even = stats(services)["groups"]["even"]
    assert {k: even[k] for k in ("sections", "done", "checked", "changed", "emailed", "failed",
                                 "remaining", "finished", "late_seconds")} == {
        "sections": 3, "done": 3, "checked": 2, "changed": 1, "emailed": 1, "failed": 1,
        "remaining": 0, "finished": True, "late_seconds": 420}
    assert len(resend_server.emails) == 1
    finished = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert len(finished) == 1 and ("enqueued=3 checked=2 changed=1 emailed=1 failed=1"
                                   in finished[0])
    assert any("cron run" in r.getMessage() and "found=3 enqueued=3" in r.getMessage()
               and "ran late by 420 s" in r.getMessage() for r in caplog.records)
    rep = stats(services)
    assert rep["throughput_per_minute"] > 0 and rep["backlog"] == 0 and rep["drain_seconds"] == 0
    assert "status" not in rep and rep["groups"]["odd"] is None


def test_recent_slots_newest_first():
    names = capacity.recent_slot_names(MINUTE_7)
    hour = f"{MINUTE_7:%Y-%m-%dT%H}"
    assert names[:3] == [f"{hour}:odd", f"{hour}:even",
                         f"{MINUTE_7 - dt.timedelta(hours=1):%Y-%m-%dT%H}:odd"]


def test_throughput_gives_the_drain_time_of_the_backlog(services, queue):
    start = MINUTE_7.timestamp() - 3600  # an earlier slot: 60 checks in 10 minutes
    earlier = capacity.recent_slot_names(MINUTE_7)[3]
    capacity.open_slot(services.redis, services.keys, earlier, "even", 60, now=start)
    for i in range(60):
        capacity.record(services.redis, services.keys, earlier, checked=1, now=start + 10 * (i + 1))
    current = capacity.recent_slot_names(MINUTE_7)[1]
    capacity.open_slot(services.redis, services.keys, current, "even", 12, now=time.time())
    tasks.enqueue_checks([(TERM, f"1250{i}") for i in range(12)])  # what waits on the queue
    rep = stats(services)
    assert rep["throughput_per_minute"] == 6.0
    assert rep["backlog"] == 12 and rep["drain_seconds"] == 120
    even = rep["groups"]["even"]
    assert even["slot"] == current and even["remaining"] == 12 and even["drain_seconds"] == 120
    assert "status" not in rep  # a young slot still running is on time


def test_a_slot_not_finished_in_its_30_minutes_is_degraded(services, queue):
    slot = capacity.recent_slot_names(MINUTE_7)[2]
    started = MINUTE_7.timestamp() - 40 * 60
    capacity.open_slot(services.redis, services.keys, slot, "odd", 10, now=started)
    for i in range(4):
        capacity.record(services.redis, services.keys, slot, checked=1, now=started + 60 * i)
    rep = stats(services)
    assert rep["status"] == "degraded"
    assert rep["reason"] == f"slot {slot} not finished after 40 min: 4 of 10 checks done"
    # The health check says the same (and only degrades: checks are slow, not stopped).
    services.heartbeat.beat()
    checked = checks.run_checks(services)["checks"]["capacity"]
    assert checked["status"] == "degraded" and "not finished" in checked["reason"]


def test_a_slot_that_took_longer_than_30_minutes_is_degraded(services, queue):
    slot = capacity.recent_slot_names(MINUTE_7)[2]
    started = MINUTE_7.timestamp() - 50 * 60
    capacity.open_slot(services.redis, services.keys, slot, "odd", 2, now=started)
    capacity.record(services.redis, services.keys, slot, checked=1, now=started + 60)
    capacity.record(services.redis, services.keys, slot, failed=1, now=started + 35 * 60)
    rep = stats(services)
    assert rep["status"] == "degraded" and "took 35 min" in rep["reason"]
    # A newer slot that finished on time is the last slot now: healthy again.
    newer = capacity.recent_slot_names(MINUTE_7)[1]
    capacity.open_slot(services.redis, services.keys, newer, "even", 1, now=started + 36 * 60)
    capacity.record(services.redis, services.keys, newer, checked=1, now=started + 37 * 60)
    assert "status" not in stats(services)


def test_status_command_prints_the_table(services, queue, scraper, make_watch, capsys):
    from app.__main__ import main

    make_watch("a@asu.edu", "12430")
    scraper.set_section(TERM, "12430", seats_available=0)
    services.heartbeat.beat()  # a live scheduler
    tasks.run_cron_now("even")
    drain(queue)
    assert main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["group", "last", "run", "late", "sections", "done", "failed",
                              "changed", "emailed", "drain"]
    even = next(line for line in out if line.startswith("even"))
    assert even.split()[4:9] == ["1", "1", "0", "0", "0"] and "done in" in even
    assert next(line for line in out if line.startswith("odd")).split()[1] == "never"
    assert "breaker CLOSED" in out[-5] and out[-2] == "status healthy"
    assert out[-4].startswith("scheduler alive on ")
    assert out[-3].startswith("schedule: running: this service runs the schedule since the hand-over at ")
    assert out[-1] == "emails: 0 waiting (0 overdue), 0 not delivered in the last 24 h"
    assert main(["status", "--json"]) == 0
    assert '"circuit_breaker": "CLOSED"' in capsys.readouterr().out
