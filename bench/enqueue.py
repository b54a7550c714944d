"""How fast a cron run puts checks on the queue: one LPUSH per 1,000 versus one per task.

Prints figures; asserts nothing about timing. Run: `make bench` (or python bench/enqueue.py).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._env import app_env, bench_database, redis_server  # noqa: E402

N = int(os.environ.get("BENCH_SECTIONS", "10000"))


def main() -> None:
    with redis_server() as url:
        os.environ.update(app_env(url, bench_database()))
        from app import tasks
        from app.queue.instance import huey
        from app.services import get_services

        services = get_services()
        sections = [("2261", f"{10000 + i:05d}") for i in range(N)]

        huey.storage.flush_all()
        services.redis.flushdb()
        before = services.redis.info("stats")["total_commands_processed"]
        started = time.perf_counter()
        enqueued = tasks.enqueue_checks(sections)
        bulk = time.perf_counter() - started
        bulk_cmds = services.redis.info("stats")["total_commands_processed"] - before - 1
        assert enqueued == N == huey.pending_count()

        huey.storage.flush_all()
        services.redis.flushdb()
        before = services.redis.info("stats")["total_commands_processed"]
        started = time.perf_counter()
        services.pending.claim(sections)
        for term, nbr in sections:
            tasks.check_section(term, nbr, time.time())  # huey.enqueue: one LPUSH each
        single = time.perf_counter() - started
        single_cmds = services.redis.info("stats")["total_commands_processed"] - before - 1

        again = tasks.enqueue_checks(sections)  # everything is pending: nothing goes twice
        print(f"enqueue {N} checks (with pending markers):")
        print(f"  bulk LPUSH per 1,000   {bulk:7.3f} s  {N / bulk:9.0f} checks/s  {bulk_cmds} Redis commands")
        print(f"  one huey.enqueue each  {single:7.3f} s  {N / single:9.0f} checks/s  {single_cmds} Redis commands")
        print(f"  second run while pending: {again} enqueued")
        services.close()


if __name__ == "__main__":
    main()
