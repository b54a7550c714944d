"""The Huey instance: revocation is off, so running a task costs no Redis round trip of its own."""

from __future__ import annotations

import pytest

from app import tasks
from app.queue.instance import huey


def test_running_a_task_asks_redis_nothing_about_revocation(services, scraper, monkeypatch):
    scraper.set_section("2261", "12430", seats_available=1)
    sent = []
    real = huey.storage.conn.execute_command

    def record(*args, **kwargs):
        sent.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(huey.storage.conn, "execute_command", record)
    huey.execute(tasks.check_section.s("2261", "12430"))
    assert scraper.calls == [("2261", "12430")]  # the check did run
    assert sent == []  # stock huey: HMGET of the revoke flags before, HDEL after


def test_revoking_is_refused_loudly():
    with pytest.raises(NotImplementedError):
        huey.revoke(tasks.check_section.s("2261", "12430"))


@pytest.fixture
def huey_log():
    """huey's logger as its consumer_main leaves it (INFO, a handler); records collected."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("huey", "huey.consumer")]
    saved = [lg.level for lg in loggers]
    loggers[0].setLevel(logging.INFO)
    loggers[0].addHandler(handler)
    yield records
    loggers[0].removeHandler(handler)
    for lg, level in zip(loggers, saved):
        lg.setLevel(level)


@huey.task()
def _does_nothing() -> None:
    pass


@huey.task()
def _fails() -> None:
    raise RuntimeError("test failure")


def test_the_consumer_writes_no_line_per_task_but_keeps_its_own_and_every_error(huey_log):
    import logging

    from app.queue.consumer import Consumer

    consumer = huey.create_consumer(workers=1, worker_type="thread")
    assert isinstance(consumer, Consumer)
    huey.execute(_does_nothing.s())  # stock huey: "Executing ..." and "... executed in ..." at INFO
    assert [r.getMessage() for r in huey_log] == []
    logging.getLogger("huey.consumer").info("consumer started")  # start/stop lines stay
    huey.execute(_fails.s())  # a task's exception is still logged, with its traceback
    messages = [(r.name, r.levelname, r.getMessage()) for r in huey_log]
    assert messages[0] == ("huey.consumer", "INFO", "consumer started")
    assert [(n, lv) for n, lv, _ in messages[1:]] == [("huey", "ERROR")]
    assert huey_log[1].exc_info and "test failure" in str(huey_log[1].exc_info[1])


def test_a_cron_runs_messages_are_the_ones_huey_makes_each_with_its_own_id():
    sections = [("2261", "12430"), ("2261", "12431"), ("2262", "12430")]
    payloads = tasks.check_payloads(sections, 1_000.5, "2026-12-01T10:even")
    made = [huey.deserialize_task(p) for p in payloads]
    for (term, nbr), task in zip(sections, made):
        expected = huey.deserialize_task(huey.serialize_task(
            tasks.check_section.s(term, nbr, 1_000.5, "2026-12-01T10:even")))
        assert type(task) is type(expected) and task.args == expected.args == (term, nbr, 1_000.5, "2026-12-01T10:even")
        assert (task.retries, task.retry_delay, task.retry_backoff, task.eta, task.priority) == (
            expected.retries, expected.retry_delay, expected.retry_backoff, expected.eta, expected.priority)
    assert len({t.id for t in made}) == len(made)


def test_each_reader_thread_keeps_one_connection_and_gets_a_new_one_when_redis_drops_it(queue):
    """A worker's blocking read stays on its thread's own connection (not the pool's, taken and
    given back around every read), and a connection Redis dropped is replaced on the next read:
    the task queued meanwhile is still read, once."""
    import threading

    storage = queue.storage
    storage.wake_key = "huey.wake.test-reader"
    try:
        seen = {}

        def reader():
            storage.enqueue(b"one")
            assert storage.dequeue() == b"one"
            first = storage._reader()
            seen["id"] = first.client_id()
            storage.enqueue(b"two")
            assert storage.dequeue() == b"two"
            seen["same"] = storage._reader() is first and first.client_id() == seen["id"]
            storage.conn.client_kill_filter(_id=seen["id"])  # as a Redis restart or timeout would
            storage.enqueue(b"three")
            seen["after_drop"] = storage.dequeue()
            seen["new_id"] = first.client_id()

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(30)
        assert seen["same"] is True
        assert seen["after_drop"] == b"three" and seen["new_id"] != seen["id"]
        assert storage.queue_size() == 0
        other = {}
        side = threading.Thread(target=lambda: other.setdefault("client", storage._reader()))
        side.start()
        side.join(10)
        assert other["client"] is not storage._reader()  # one per thread
    finally:
        storage.wake_key = None
