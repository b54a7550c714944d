"""A failed push onto the queue or a failed requeue loses nothing."""

from __future__ import annotations

import pytest
import redis

from app import tasks
from app.__main__ import main
from app.queue.instance import huey


@pytest.fixture
def failing_push(services, monkeypatch):
    """The script that marks and pushes the checks fails (Redis restarting, out of memory, a
    network blip): markers and LPUSH are one script (app.schedule.pending), so both fail together."""
    def refuse(*args, **kwargs):
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(services.pending, "_enqueue", refuse)


def test_a_failed_push_leaves_no_pending_markers(services, queue, failing_push, monkeypatch):
    sections = [("2261", "12430"), ("2261", "12432")]
    with pytest.raises(redis.ConnectionError):
        tasks.enqueue_checks(sections)
    assert not any(services.pending.is_pending(*s) for s in sections)
    monkeypatch.undo()
    assert tasks.enqueue_checks(sections) == 2  # the retried run enqueues them at once


def test_a_failed_requeue_keeps_the_dead_letters(services, queue, failing_push, monkeypatch):
    services.dead_letters.add("2261", "12431", "scraper: HTTP 500", attempts=4)
    services.dead_letters.add("2261", "12433", "scraper: timeout", attempts=4)
    assert main(["dead-letters", "--requeue"]) == 1
    assert services.dead_letters.count() == 2
    monkeypatch.undo()
    assert main(["dead-letters", "--requeue"]) == 0
    assert services.dead_letters.count() == 0
    assert huey.pending_count() == 2
