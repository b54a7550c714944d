"""Log lines of an outage (app.outages): Redis stopped under a running `python -m app worker` (a
private redis-server, never the shared one), PostgreSQL unreachable, a check failed for a known
reason (issue 27)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import time

import pytest
import redis

from app import outages
from app.check.run import CheckFailed
from tests.conftest import TEST_ENV
from tests.deadends import closed_port, pg_url
from tests.test_worker import Worker, wait_for

PRIVATE_PORT = 16387  # this helper's private range: never the shared Redis
OUTAGE_SECONDS = 180


class PrivateRedis:
    def __init__(self, port: int):
        self.port = port
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--bind", "127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), 10, "the private redis-server")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis():
    server = PrivateRedis(PRIVATE_PORT)
    server.start()
    yield server
    server.stop()


def test_redis_stopped_under_a_running_worker_logs_a_few_lines_and_the_true_duration(
        private_redis, services):
    url = f"redis://127.0.0.1:{PRIVATE_PORT}/0"
    worker = Worker(**{**TEST_ENV, "REDIS_URL": url})
    try:
        client = redis.Redis.from_url(url)
        wait_for(lambda: client.hget(services.keys.heartbeat, os.uname().nodename), 30,
                 "the worker's heartbeat on the private Redis")
        time.sleep(2)
        before = len(worker.output())
        private_redis.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        private_redis.start()
        wait_for(lambda: "reachable again" in worker.output()[before:], 60,
                 "the line saying Redis is back", step=0.5)
        during = worker.output()[before:]
        back_line = next(line for line in during.splitlines() if "reachable again" in line)
        took = time.monotonic() - stopped
    finally:
        worker.kill()
    lines = [line for line in during.splitlines() if line.strip()]
    print(f"the worker's lines while Redis was down for {OUTAGE_SECONDS} s:\n{during}")
    assert "Traceback" not in during, during[:3000]
    assert sum("Redis unreachable" in line for line in lines) == 1, during
    still = sum("Redis still unreachable" in line for line in lines)
    assert 2 <= still <= OUTAGE_SECONDS // 60 + 1, during
    assert len(lines) <= 12, during  # no flood: the lines above and a few of their own
    seconds = int(re.search(r"reachable again after (\d+) s", back_line).group(1))
    assert OUTAGE_SECONDS - 5 <= seconds <= took + 1, back_line


def capture(filt: outages.OutageFilter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(filt)
    logger = logging.getLogger(f"test.outage.{id(filt)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_postgresql_unreachable_is_one_line_then_one_a_minute_then_back(monkeypatch):
    import psycopg

    now = [1000.0]
    reachable = {"yes": False}

    def probe():
        if not reachable["yes"]:
            raise OSError("still down")

    monkeypatch.setattr(outages, "PROBE_SECONDS", 0.05)
    filt = outages.OutageFilter({"PostgreSQL": probe}, clock=lambda: now[0])
    logger, stream = capture(filt)
    outages.log.handlers[:] = logger.handlers
    outages.log.propagate = False
    try:
        for i in range(300):  # five minutes of failing checks, one a second
            try:
                psycopg.connect(pg_url(closed_port()), connect_timeout=1)
            except psycopg.OperationalError:
                logger.exception("Unhandled exception in task %s.", i)
            now[0] += 1
        reachable["yes"] = True
        wait_for(lambda: "reachable again" in stream.getvalue(), 5, "the line saying it is back")
    finally:
        outages.log.handlers[:] = []
        outages.log.propagate = True
    lines = stream.getvalue().splitlines()
    assert "Traceback" not in stream.getvalue()
    assert lines[0].startswith("PostgreSQL unreachable: OperationalError")
    assert sum("still unreachable" in line for line in lines) == 4  # at 60, 120, 180, 240 s
    assert lines[-1].startswith("PostgreSQL reachable again after 300 s")
    assert len(lines) == 6


def test_a_check_failed_for_a_known_reason_is_one_line_and_the_unexpected_keeps_its_traceback():
    filt = outages.OutageFilter({})
    logger, stream = capture(filt)
    try:
        raise CheckFailed("scraper: HTTP 500: section not found")
    except CheckFailed:
        logger.exception("Unhandled exception in task %s.", "abc")
    try:
        json.loads("{")
    except ValueError:
        logger.exception("Unhandled exception in task %s.", "def")
    text = stream.getvalue()
    first, *rest = text.splitlines()
    assert first == "Unhandled exception in task abc. CheckFailed: scraper: HTTP 500: section not found"
    assert rest[0] == "Unhandled exception in task def." and "Traceback" in text
