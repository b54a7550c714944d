"""Nothing read from Redis runs code: tasks are signed JSON, anything else is dropped and logged.

The attacker here holds the Redis password (it sits in the app user's env file and, on scale-out,
crosses the network to the worker hosts) and nothing else.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pickle

from huey.registry import Message

from app import tasks
from app.queue.instance import huey
from app.queue.taskcodec import PREFIX, TaskSerializer, signing_key
from app.settings import get_settings
from tests.test_worker import TERM, start_worker, wait_for  # noqa: F401  (start_worker: fixture)


class RunsAShellCommand:
    """What an attacker pickles: unpickling it runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_pickle(marker) -> bytes:
    return pickle.dumps(RunsAShellCommand(marker))


def forged_check(class_nbr: str) -> bytes:
    """A well-formed check, signed with a key that is not ours (say, the Redis password)."""
    forger = TaskSerializer(b"the redis password, say")
    return forger.serialize(huey._registry.create_message(tasks.check_section.s(TERM, class_nbr)))


def test_a_crafted_pickle_job_is_dropped_logged_and_the_worker_goes_on(start_worker, services,
                                                                       scraper, tmp_path):
    queued_marker, scheduled_marker = tmp_path / "ran-from-queue", tmp_path / "ran-from-schedule"
    # One on the schedule too (where retries wait): the scheduler's start-up tick reads it.
    huey.storage.add_to_schedule(crafted_pickle(scheduled_marker),
                                 datetime.datetime.utcnow() - datetime.timedelta(minutes=1))
    w = start_worker()
    conn, queue = huey.storage.conn, huey.storage.queue_key
    conn.lpush(queue, crafted_pickle(queued_marker))
    conn.lpush(queue, forged_check("66666"))
    scraper.set_section(TERM, "12430", seats_available=0)
    assert tasks.enqueue_checks([(TERM, "12430")]) == 1  # behind the two bad jobs (FIFO)

    wait_for(lambda: scraper.calls, 10, "the real check after the bad jobs")
    wait_for(lambda: w.output().count("dropped a job read from Redis") >= 3, 10,
             "the three drops in the log")
    assert not queued_marker.exists() and not scheduled_marker.exists()  # nothing ran
    assert scraper.calls == [(TERM, "12430")]  # the forged check was not run either
    # the real check's lease (issue 26) lives while it runs: once it ended, nothing is left (a
    # dropped job left to loop on the schedule would keep this from ever holding)
    wait_for(lambda: not services.pending.is_pending(TERM, "12430") and not huey.scheduled_count(),
             10, "the real check and its lease to end")
    assert not huey.pending_count() and not huey.scheduled_count()  # dropped, not left to loop
    out = w.output()
    assert "a pickled task" in out and "bad signature" in out
    assert "Traceback" not in out
    assert w.proc.poll() is None  # still consuming
    scraper.set_section(TERM, "12432", seats_available=0)
    tasks.enqueue_checks([(TERM, "12432")])
    wait_for(lambda: len(scraper.calls) == 2, 10, "a later check")


def test_tasks_on_the_wire_are_signed_json_not_pickle():
    wire = huey.serialize_task(tasks.check_section.s(TERM, "12430", 1700000000.25, "2026-12-01T08:00Z:even"))
    assert wire.startswith(PREFIX) and not wire.startswith(b"\x80")
    body = json.loads(wire.split(b":", 2)[2])
    assert body[Message._fields.index("name")] == "app.tasks.check_section"
    task = huey.deserialize_task(wire)
    assert isinstance(task, tasks.check_section.task_class)
    assert task.args == (TERM, "12430", 1700000000.25, "2026-12-01T08:00Z:even")


def test_a_retry_waiting_on_the_schedule_keeps_its_time(services):
    huey.storage.flush_all()
    task = tasks.check_section.s(TERM, "12430")
    task.eta = datetime.datetime(2026, 12, 1, 8, 0, 30)  # huey's naive UTC
    task.retries = 2
    huey.add_schedule(task)
    [back] = huey.read_schedule(datetime.datetime(2026, 12, 1, 8, 1))
    assert (back.id, back.eta, back.retries, back.args) == (task.id, task.eta, 2, (TERM, "12430"))
    huey.storage.flush_all()


def test_every_kind_of_bad_job_is_dropped_with_a_reason(caplog):
    good = huey.serialize_task(tasks.check_section.s(TERM, "12430"))
    tampered = good.replace(b"12430", b"12431")
    bad = {"a pickled task": crafted_pickle("/nonexistent/never"), "bad signature": tampered,
           "not a signed task": b'{"id": 1}', "bad signature ": PREFIX + b"short"}
    with caplog.at_level(logging.WARNING, logger="app.queue.instance"):
        for data in bad.values():
            assert huey.deserialize_task(data) is None
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for reason in bad:
        assert reason.strip() in logged


def test_the_signing_key_is_neither_the_redis_password_nor_the_service_role_key():
    settings = get_settings()
    key = signing_key(settings.unsubscribe_secret)
    assert len(key) == 32 and key != settings.unsubscribe_secret.encode()
    assert key not in settings.redis_url.encode()
    other = TaskSerializer(signing_key(settings.unsubscribe_secret + "x"))
    wire = huey.serialize_task(tasks.check_section.s(TERM, "12430"))
    assert huey.deserialize_task(other.serialize(huey.serializer.deserialize(wire))) is None
