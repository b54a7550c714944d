"""A cron run for 10,000 sections (item 4): query + dedup (pending markers) + enqueue.

The run is the one the periodic task and /api/cron make (app.tasks.run_cron_now), in this
process, against the bench database seeded with 20,000 watched sections (10,000 even) and a
private redis-server. Between runs the queue and the markers are emptied, so every run
enqueues all 10,000. Also times each step on its own, to say what bounds the run.
Prints figures, writes bench/results/cron_run.json.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import bench_service, seed_watchers  # noqa: E402

SECTIONS = 2000 if S.QUICK else 10000
REPEATS = max(S.REPEATS, 5)  # a run is short: take more of them


def main() -> None:
    with bench_service() as (env, _):
        database_url = env["DATABASE_URL"]
        seed_watchers(database_url, "2261", [f"{10000 + i:05d}" for i in range(2 * SECTIONS)])
        from app import db, tasks
        from app.db import watches
        from app.queue.instance import huey
        from app.services import get_services

        services = get_services()
        runs, steps = [], {"query": [], "claim_markers": [], "serialize": [], "lpush": []}
        for _ in range(REPEATS + 1):
            services.redis.flushdb()
            started = time.perf_counter()
            out = tasks.run_cron_now("even", force=True)
            runs.append(time.perf_counter() - started)
            assert out["sections_enqueued"] == SECTIONS == huey.pending_count(), out
            # the same steps one by one
            services.redis.flushdb()
            t0 = time.perf_counter()
            with db.transaction(services.pool) as conn:
                sections = watches.sections_to_check(conn, "even")
            t1 = time.perf_counter()
            fresh = services.pending.claim(sections)
            t2 = time.perf_counter()
            now = time.time()
            payloads = tasks.check_payloads(fresh, now)
            t3 = time.perf_counter()
            huey.storage.conn.lpush(huey.storage.queue_key, *payloads)
            t4 = time.perf_counter()
            for name, a, b in (("query", t0, t1), ("claim_markers", t1, t2), ("serialize", t2, t3),
                               ("lpush", t3, t4)):
                steps[name].append(b - a)
        runs, steps = runs[1:], {k: v[1:] for k, v in steps.items()}  # the first run warms up
        services.close()
    figures = {"sections": SECTIONS, "seconds": S.summary(runs),
               "steps_seconds": {k: S.summary(v) for k, v in steps.items()}}
    print(f"cron run, {SECTIONS} sections (load {S.loadavg():.2f}): {S.fmt(figures['seconds'], ' s', 3)}")
    for k, v in figures["steps_seconds"].items():
        print(f"  {k:14s} {S.fmt(v, ' s', 3)}")
    S.write("cron_run", figures)


if __name__ == "__main__":
    main()
