"""A busy worker takes its next task and leases it in one round trip, and ends the last task's
lease in that same round trip (BullMQ's move-to-active; app.queue.instance). Real Redis; huey's own
consumer in this process (thread workers), Redis's replies watched as the client parses them."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from app.queue.instance import huey

QUEUE_PATH = {"BRPOP", "RPOP", "EVALSHA", "ZADD", "ZREM"}
ran: list[int] = []


@huey.task()
def _note(i: int) -> None:
    ran.append(i)


@pytest.fixture
def replies(monkeypatch):
    """The name of every Redis command this process sent on the queue path, as its reply came."""
    seen: list[str] = []
    real = redis.Redis.parse_response

    def parse(self, connection, command_name, **options):
        reply = real(self, connection, command_name, **options)
        if str(command_name).upper() in QUEUE_PATH:
            seen.append(str(command_name).upper())
        return reply

    monkeypatch.setattr(redis.Redis, "parse_response", parse)
    return seen


def _in_worker_thread(fn):
    """Run fn in a fresh thread that huey's consumer would have started (its startup hooks run)."""
    out: dict = {}

    def body():
        for hook in huey._startup.values():
            hook()
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            out["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    return out


def test_a_busy_worker_costs_one_round_trip_per_task_and_ends_its_last_lease_at_stop(queue, replies):
    ran.clear()
    n = 40
    for i in range(n):
        huey.enqueue(_note.s(i))
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        deadline = time.monotonic() + 20
        while len(ran) < n and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        consumer.stop(graceful=True)
    assert sorted(ran) == list(range(n))  # each ran, once
    sent = Counter(replies)
    # Per task one EVALSHA (end the last lease, pop, lease); the first task came from the blocking
    # read (BRPOP then ZADD), the empty queue at the end costs one EVALSHA and one BRPOP, the stop
    # one ZREM of the last task's lease. Before: BRPOP, ZADD and ZREM per task (3 n).
    assert sent["EVALSHA"] == n and sent["BRPOP"] <= 2, sent
    assert sent["ZADD"] <= 1 and sent["ZREM"] <= 1 and not sent["RPOP"], sent
    assert sum(sent.values()) <= n + 5, sent
    assert huey.storage.schedule_size() == 0  # no lease left behind: none runs again


class Killed(BaseException):
    """The worker dies here: nothing of it runs after this point (a SIGKILL, an OOM kill)."""


def test_a_worker_killed_right_after_it_took_a_task_leaves_that_task_leased(queue, monkeypatch):
    """Before, BRPOP and the lease's ZADD were two round trips: a kill between them lost the task
    (its section waited for the stale-marker rule). Now a busy worker's pop is its lease."""
    ran.clear()
    first, second = _note.s(1), _note.s(2)
    huey.enqueue(first)
    huey.enqueue(second)
    second_bytes = huey.serialize_task(second)
    real = redis.Redis.parse_response

    def parse(self, connection, command_name, **options):
        reply = real(self, connection, command_name, **options)
        if str(command_name).upper() in QUEUE_PATH and second_bytes in (
                reply if isinstance(reply, (list, tuple)) else [reply]):
            raise Killed  # the reply holding the second task arrived; the worker dies
        return reply

    def work():
        huey.execute(huey.dequeue())  # the first task, run to its end
        monkeypatch.setattr(redis.Redis, "parse_response", parse)
        huey.dequeue()  # the second: the worker dies as the reply comes

    out = _in_worker_thread(work)
    monkeypatch.setattr(redis.Redis, "parse_response", real)
    assert isinstance(out.get("error"), Killed), out
    assert ran == [1] and huey.pending_count() == 0
    assert huey.storage.conn.zscore(huey.storage.schedule_key, second_bytes) is not None  # leased
    # the first task's lease ended in that same round trip: only the second is left to run again
    assert huey.storage.schedule_size() == 1


def test_an_idle_worker_blocks_and_asks_nothing_else(queue, replies):
    """After a blocking read that found nothing, the next read blocks again at once: an idle day
    costs what it did (one BRPOP per read timeout per worker), no EVALSHA in between."""
    saved = huey.storage.read_timeout
    huey.storage.read_timeout = 1
    try:
        out = _in_worker_thread(lambda: [huey.dequeue() for _ in range(3)])
    finally:
        huey.storage.read_timeout = saved
    assert out == {"value": [None, None, None]}
    assert replies == ["BRPOP"] * 3


def test_a_busy_read_survives_a_dropped_connection_and_a_restarted_redis(queue):
    """The take script on a connection Redis dropped (a restart, an idle timeout) is sent once
    more on a new one, and reloaded when Redis lost its scripts: the next task is still taken
    and leased, once."""
    ran.clear()
    tasks_in = [_note.s(i) for i in range(3)]
    for task in tasks_in:
        huey.enqueue(task)

    def work():
        huey.execute(huey.dequeue())
        huey.storage.conn.client_kill_filter(_id=huey.storage._reader().client_id())
        huey.execute(huey.dequeue())
        huey.storage.conn.script_flush()
        huey.execute(huey.dequeue())
        huey.settle_held()  # what the worker's shutdown does

    assert _in_worker_thread(work) == {"value": None}
    assert ran == [0, 1, 2] and huey.pending_count() == 0 and huey.storage.schedule_size() == 0
