"""Per-task cost of the task format: huey's pickle versus signed JSON (app.queue.taskcodec, issue 18).

A cron run serializes one check per section and each worker deserializes it: this is on the hot
path. Needs neither Redis nor PostgreSQL. Prints figures; asserts nothing about timing.
Run: python bench/task_codec.py (BENCH_TASKS, default 20000).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N = int(os.environ.get("BENCH_TASKS", "20000"))


def per_task_us(serializer, messages) -> tuple[float, float, int]:
    started = time.perf_counter()
    wires = [serializer.serialize(m) for m in messages]
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    for wire in wires:
        serializer.deserialize(wire)
    decoded = time.perf_counter() - started
    return encoded / len(messages) * 1e6, decoded / len(messages) * 1e6, len(wires[0])


def main() -> None:
    from huey.serializer import Serializer

    from app.queue.taskcodec import TaskSerializer, signing_key

    # Through huey's own registry, as tasks.enqueue_checks builds them; no settings needed.
    from huey import MemoryHuey

    q = MemoryHuey("bench")

    @q.task(retries=3, retry_delay=30, retry_backoff=2)
    def check_section(term, class_nbr, enqueued_at=None, slot=None):
        pass

    now = time.time()
    messages = [q._registry.create_message(check_section.s("2261", f"{10000 + i:05d}", now,
                                                           "2026-12-01T08:00Z:even"))
                for i in range(N)]
    rows = [("pickle (huey default)", Serializer()),
            ("signed JSON (app.queue.taskcodec)", TaskSerializer(signing_key(uuid.uuid4().hex)))]
    print(f"{N} check tasks, per task:")
    for name, serializer in rows:
        per_task_us(serializer, messages[:1000])  # warm up
        enc, dec, size = per_task_us(serializer, messages)
        print(f"  {name:28} serialize {enc:5.1f} us  deserialize {dec:5.1f} us  {size} bytes")


if __name__ == "__main__":
    main()
