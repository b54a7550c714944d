"""A bench-only no-op task and a counter of finished no-ops (see bench/_consumer.py).

A module of its own: huey names a task after its module, and the consumer runs as __main__.
"""

from __future__ import annotations

import os
import threading
import time

from huey.signals import SIGNAL_COMPLETE

from app.queue.instance import huey

BATCH = int(os.environ.get("BENCH_NOOP_BATCH", "10000"))
_done = 0
_lock = threading.Lock()


@huey.task()
def noop() -> None:
    """Does nothing: what is left is the queue's own cost."""


@huey.signal(SIGNAL_COMPLETE)
def _count(signal, task, *args) -> None:
    global _done
    if not isinstance(task, noop.task_class):
        return
    with _lock:
        _done += 1
        finished = _done % BATCH == 0
        count = _done
    if finished:
        huey.storage.conn.set(f"bench:noop_done:{count}", repr(time.time()))
