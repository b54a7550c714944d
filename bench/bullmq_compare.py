"""Ours versus the BullMQ port, side by side in one run: the ratios of issue 20.

The anchor is the system this service replaces: BullMQ (Node.js, one Worker at concurrency 4).
bench/bullmq/compare.js runs it against the same private redis-server this benchmark starts;
its npm packages (pinned in bench/bullmq/package.json) are installed by `make bench` into
bench/bullmq/node_modules (git-ignored, never part of the product).

Absolute times on a shared machine drift by a factor of two from minute to minute, so each of
the REPEATS rounds takes all three measurements one right after the other, and a ratio is taken
within its round:

- BullMQ: one warm-up round, then addBulk of N jobs (timed) and their drain by the warm Worker
  (from resuming the paused queue to the N-th completion).
- queue: our real consumer (bench._consumer: app.queue.worker's flags, 4 thread workers), warmed by one
  drain of N no-ops, then N no-ops pushed in one LPUSH, timed to the N-th completion (as
  bench/throughput.py's queue overhead).
- cron: our cron run for N sections (app.tasks.run_cron_now: query, pending markers, serialize,
  LPUSH) against a database of 2N watched sections, warmed by one run (as bench/cron_run.py).

ratio = ours / BullMQ, per round; the figure is the median of the rounds with their spread.
Prints figures, writes bench/results/bullmq_compare.json. Skipped (and said so) without node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import (app_env, bench_database, migrate, redis_server, seed_watchers,  # noqa: E402
                        start_consumer, stop)

N = 2000 if S.QUICK else 10000
WORKERS = 4
NODE_DIR = S.ROOT / "bench" / "bullmq"


def bullmq_round(redis_url: str) -> dict:
    cp = subprocess.run(["node", str(NODE_DIR / "compare.js"), redis_url, str(N), str(WORKERS)],
                        cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
    if cp.returncode:
        raise SystemExit(f"bench/bullmq/compare.js failed: {cp.stderr[-2000:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])


class Ours:
    def __init__(self, redis_url: str, database_url: str):
        # No scheduler in the consumer: BullMQ's worker has none, and ours would run its catch-up
        # cron slot at start over the sections seeded for the cron round, 10,000 real checks
        # among the no-ops (issue 15's catch-up; seen as 6 commands a task, 2026-12-01).
        self.env = app_env(redis_url, database_url, BENCH_NOOP_BATCH=str(N),
                           SEATWATCH_SCHEDULER="off")
        os.environ.update(self.env)
        import redis

        from app import tasks
        from app.queue.instance import huey
        from bench import _noop

        self.tasks, self.huey, self.noop = tasks, huey, _noop.noop
        self.r = redis.Redis.from_url(redis_url)
        self.done = 0

    def _drain(self, payloads: list[bytes]) -> float:
        storage = self.huey.storage
        self.done += N
        key = f"bench:noop_done:{self.done}"
        started = time.time()
        storage.conn.lpush(storage.queue_key, *payloads)
        return float(S.wait_for(lambda: self.r.get(key), timeout=600, interval=0.01)) - started

    def queue_round(self) -> dict:
        """A fresh consumer, one warm-up drain, one measured drain of N no-ops."""
        payloads = [self.huey.serialize_task(self.noop.s()) for _ in range(N)]
        self.done = 0
        consumer = start_consumer(self.env)
        try:
            self._drain(payloads)
            before = S.redis_calls(self.r)
            seconds = self._drain(payloads)
            calls = S.calls_between(before, S.redis_calls(self.r), ignore=("info", "get", "set"))
        finally:
            stop(consumer)
        return {"seconds": seconds, "redis_commands_per_task": sum(calls.values()) / N}

    def cron_round(self) -> float:
        self.r.flushdb()
        started = time.perf_counter()
        out = self.tasks.run_cron_now("even", force=True)
        took = time.perf_counter() - started
        assert out["sections_enqueued"] == N == self.huey.pending_count(), out
        self.r.flushdb()
        return took


def main() -> None:
    if not shutil.which("node") or not (NODE_DIR / "node_modules" / "bullmq").exists():
        print("bullmq comparison skipped: node or bench/bullmq/node_modules missing "
              "(`make bench` installs them)")
        return
    database_url = bench_database()
    rounds = []
    with redis_server() as redis_url:
        ours = Ours(redis_url, database_url)
        migrate(ours.env)
        seed_watchers(database_url, "2261", [f"{10000 + i:05d}" for i in range(2 * N)])
        ours.cron_round()  # warm-up: imports, the pool's connections, the claim script loaded
        print(f"ours vs BullMQ, N={N}, {WORKERS} workers (load {S.loadavg():.2f}):", flush=True)
        for _ in range(S.REPEATS):
            load = S.loadavg()
            bull = bullmq_round(redis_url)
            ours.r.flushdb()
            queue = ours.queue_round()
            ours.r.flushdb()
            cron = ours.cron_round()
            rnd = {"load_1min": round(load, 2), "bullmq": bull, "queue": queue, "cron_s": cron,
                   "drain_ratio": queue["seconds"] / bull["drain_s"],
                   "cron_ratio": cron / bull["add_bulk_s"]}
            rounds.append(rnd)
            print(f"  round: BullMQ drain {bull['drain_s']:.2f} s, addBulk {bull['add_bulk_s']:.3f} s; "
                  f"ours drain {queue['seconds']:.2f} s ({queue['redis_commands_per_task']:.2f} "
                  f"commands/task), cron {cron:.3f} s; ratios {rnd['drain_ratio']:.2f}, "
                  f"{rnd['cron_ratio']:.2f} (load {load:.2f})", flush=True)
    figures = {
        "n": N, "workers": WORKERS, "versions": {k: rounds[0]["bullmq"][k] for k in ("bullmq", "ioredis", "node")},
        "rounds": rounds,
        "bullmq_drain_s": S.summary([r["bullmq"]["drain_s"] for r in rounds]),
        "bullmq_add_bulk_s": S.summary([r["bullmq"]["add_bulk_s"] for r in rounds]),
        "ours_drain_s": S.summary([r["queue"]["seconds"] for r in rounds]),
        "ours_cron_s": S.summary([r["cron_s"] for r in rounds]),
        "drain_ratio": S.summary([r["drain_ratio"] for r in rounds]),
        "cron_ratio": S.summary([r["cron_ratio"] for r in rounds]),
        "redis_commands_per_task": S.summary([r["queue"]["redis_commands_per_task"] for r in rounds]),
    }
    print(f"  drain ours/BullMQ {S.fmt(figures['drain_ratio'])}; cron/addBulk {S.fmt(figures['cron_ratio'])}")
    S.write("bullmq_compare", figures)


if __name__ == "__main__":
    main()
