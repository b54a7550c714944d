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
