"""A check that can no longer run never blocks its section past its group's next slot, and a
check taken by a worker that died runs again from its lease (issue 26). Real Redis and PostgreSQL,
the real consumer process for the SIGKILL, huey's own schedule read with the clock moved."""

from __future__ import annotations

import datetime
import time

from huey.utils import utcnow

from app import tasks
from app.queue import instance
from app.queue.instance import huey
from app.queue.taskcodec import TaskSerializer, signing_key
from tests.test_worker import start_worker, wait_for  # noqa: F401 (a fixture)

TERM, NBR = "2261", "12430"


def test_a_check_dropped_for_a_rotated_key_frees_its_section(services, queue, scraper, make_watch):
    """The release after a SUPABASE_SERVICE_ROLE_KEY rotation cannot verify the checks queued by
    the one before: it drops them unrun, and their sections are free for their next slot."""
    make_watch("a@asu.edu", NBR)
    old_release = TaskSerializer(signing_key("the key before the rotation"))
    [payload] = tasks.check_payloads([(TERM, NBR)], time.time(), "2026-12-06T21:even")
    message = huey.serializer.deserialize(payload)
    services.pending.enqueue([(TERM, NBR)], [old_release.serialize(message)],
                             huey.storage.queue_key, time.time())
    assert huey.dequeue() is None  # what a worker of the new release does with it: dropped
    assert not services.pending.is_pending(TERM, NBR)
    assert huey.storage.schedule_size() == 0  # and no lease left to run it again
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 1


def test_a_marker_whose_copy_is_gone_is_taken_over_at_the_next_slot(services, queue, make_watch):
    """A copy taken off the queue by a worker killed before it leased or started it (or lost any
    other way) leaves a marker; the group's next slot takes it over when nothing older waits."""
    make_watch("a@asu.edu", NBR)
    an_hour_ago = time.time() - 3600
    [payload] = tasks.check_payloads([(TERM, NBR)], an_hour_ago)
    services.pending.enqueue([(TERM, NBR)], [payload], huey.storage.queue_key, an_hour_ago)
    # While the copy still waits on the queue (a backlog), the section gets no second copy.
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 0
    huey.storage.conn.rpop(huey.storage.queue_key)  # taken, and its worker died at once
    result = tasks.run_cron_now("even", force=True)
    assert result["sections_enqueued"] == 1, result
    assert huey.pending_count() == 1


def test_a_fresh_marker_still_blocks_a_second_copy(services, queue, make_watch):
    make_watch("a@asu.edu", NBR)
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 1
    huey.storage.conn.rpop(huey.storage.queue_key)  # taken by a worker, now running it
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 0


def test_a_check_whose_worker_died_runs_again_from_its_lease(
        start_worker, services, scraper, make_watch, sql):  # noqa: F811
    make_watch("a@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=3)
    scraper.delay = 30  # the check is in flight when its worker dies
    worker = start_worker()
    assert tasks.run_cron_now("even", force=True)["sections_enqueued"] == 1
    wait_for(lambda: scraper.calls, 20, "the worker's scraper call")
    worker.proc.kill()  # SIGKILL mid-check
    worker.proc.wait(10)
    assert huey.pending_count() == 0  # off the queue: before this issue, lost until the marker lapsed
    [(_, due)] = huey.storage.conn.zrange(huey.storage.schedule_key, 0, -1, withscores=True)
    assert time.time() + instance.LEASE_SECONDS - 60 < due <= time.time() + instance.LEASE_SECONDS
    assert huey.read_schedule(utcnow()) == []  # not due yet: never run twice while it may be alive
    # 14 minutes later (the clock moved), the scheduler's ordinary schedule read queues it again.
    later = utcnow() + datetime.timedelta(seconds=instance.LEASE_SECONDS + 60)
    for task in huey.read_schedule(later):
        huey.enqueue(task)
    assert huey.pending_count() == 1
    scraper.delay = 0
    task = huey.dequeue()
    huey.execute(task)  # a live worker's run: it checks, and ends its own lease
    assert scraper.calls == [(TERM, NBR), (TERM, NBR)]
    assert sql("select seats_available from seatwatch_section_states") == [{"seats_available": 3}]
    assert huey.storage.schedule_size() == 0 and huey.pending_count() == 0
    assert not services.pending.is_pending(TERM, NBR)
