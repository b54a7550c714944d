"""Throughput of the real consumer: drain ratio (item 1), queue overhead (item 3), latency (item 8).

Real Redis (a private redis-server), real PostgreSQL (the bench database), the real consumer
process (bench/_consumer.py: app.queue.worker's flags), the stand-in scraper and Resend in a process
of their own with a set latency.

- Drain ratio: N checks are pushed onto the queue (the cron's own bulk enqueue) and the clock
  stops when the last one's state is committed. The limit is N*L/W (W workers each waiting L on
  the scraper); ratio = limit / measured. Every check is a section's first sighting (a baseline:
  the same queries as a quiet check, an insert instead of an update).
- Workers: the same drain at 1, 2, 4, 8 workers (the scraper allows 10 calls at once).
- Queue overhead: 10,000 no-op tasks in one variadic LPUSH, drained by 4 workers.
- Latency: 200 sections go from no seats to open; from the scraper's answer showing the seat
  to the stand-in Resend accepting the email (one watcher each).
Also the consumer's CPU per check and its RSS after the 10,000-check drain (item 6).

Prints figures, writes bench/results/throughput.json. BENCH_QUICK=1: small N; BENCH_FULL=1:
the whole N x L grid of the issue (about an hour).
"""

from __future__ import annotations

import os
import sys
import time

import psycopg
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import (StandIns, app_env, bench_database, migrate, redis_server,  # noqa: E402
                        seed_watchers, start_consumer, stop)

WORKERS = 4
if S.QUICK:
    CELLS = [(200, 0.05), (200, 0.2)]
    CURVE_N, CURVE_L = 100, 0.05
    NOOPS, CHANGES = 2000, 50
elif S.FULL:
    CELLS = [(n, l) for l in (0.05, 0.2, 1.0) for n in (500, 2000, 10000)]
    CURVE_N, CURVE_L = 800, 0.2
    NOOPS, CHANGES = 10000, 200
else:
    # The grid costs ~65 min (10,000 x 1 s alone is 42 min at the limit), so by default
    # every N at 50 ms (the latency where our overhead weighs most) and shorter runs at 200 ms and
    # 1 s (where it weighs less): ~6 minutes. BENCH_FULL=1 runs the whole grid.
    CELLS = [(500, 0.05), (2000, 0.05), (10000, 0.05), (500, 0.2), (1000, 0.2), (200, 1.0)]
    CURVE_N, CURVE_L = 200, 0.05
    NOOPS, CHANGES = 10000, 200
CURVE_WORKERS = (1, 2, 4, 8)
LATENCY_L = 0.05


class Bench:
    def __init__(self, redis_url: str, database_url: str, standins: StandIns):
        self.env = app_env(redis_url, database_url, **standins.env(),
                           BENCH_NOOP_BATCH=str(NOOPS))
        os.environ.update(self.env)  # app.settings reads the environment; the enqueue runs here
        from app import tasks
        from app.queue.instance import huey
        from bench import _noop

        self.tasks, self.huey, self.noop = tasks, huey, _noop.noop
        self.r = redis.Redis.from_url(redis_url)
        self.db = psycopg.connect(database_url, autocommit=True)
        self.database_url = database_url
        self.si = standins
        self.term_seq = 1000

    def next_term(self) -> str:
        self.term_seq += 1
        return str(self.term_seq)

    def committed(self, term: str) -> int:
        return self.db.execute("select count(*) from public.seatwatch_section_states where term = %s",
                               (term,)).fetchone()[0]

    def drain(self, consumer, n: int, latency: float) -> dict:
        """One drain of n fresh checks; seconds, consumer CPU ms per check."""
        self.si.scraper("/_delay", seconds=latency)
        term = self.next_term()
        sections = [(term, f"{10000 + i:05d}") for i in range(n)]
        cpu0 = S.cpu_seconds(consumer.pid)
        started = time.monotonic()
        assert self.tasks.enqueue_checks(sections) == n
        S.wait_for(lambda: self.committed(term) >= n, timeout=max(120, n * latency * 2))
        took = time.monotonic() - started
        cpu = S.cpu_seconds(consumer.pid) - cpu0
        return {"seconds": took, "cpu_ms_per_check": cpu * 1000 / n}

    def scraper_call_ms(self, latency: float, calls: int = 20) -> float:
        """Median wall time of one call to the stand-in scraper set to `latency`, made one after
        another from here: what a scrape costs before any work of ours (its HTTP handling, the
        sleep's overshoot on a busy machine). The limit N*L/W counts L alone."""
        import json
        import statistics
        import urllib.error
        import urllib.request

        from tests.fakes import SCRAPER_TOKEN

        self.si.scraper("/_delay", seconds=latency)
        took = []
        for i in range(calls):
            req = urllib.request.Request(
                self.si.scraper_url + "/scrape", method="POST",
                data=json.dumps({"sectionNumber": f"{90000 + i}", "term": "2999"}).encode(),
                headers={"Authorization": f"Bearer {SCRAPER_TOKEN}", "Content-Type": "application/json"})
            started = time.perf_counter()
            try:
                urllib.request.urlopen(req, timeout=30).read()
            except urllib.error.HTTPError:
                pass  # an unknown section answers 500 after the same delay: the time is what counts
            took.append((time.perf_counter() - started) * 1000)
        return statistics.median(took)

    def drain_cells(self) -> list[dict]:
        out = []
        consumer = start_consumer(self.env)
        try:
            for n, latency in CELLS:
                limit = n * latency / WORKERS
                # Repeat the short cells; a long one is its own average over thousands of checks.
                runs = [self.drain(consumer, n, latency) for _ in range(S.REPEATS if limit <= 10 else 1)]
                ratio = S.summary([limit / r["seconds"] for r in runs])
                cell = {"n": n, "latency_s": latency, "workers": WORKERS, "limit_s": limit,
                        "seconds": S.summary([r["seconds"] for r in runs]), "ratio": ratio,
                        "consumer_cpu_ms_per_check": S.summary([r["cpu_ms_per_check"] for r in runs])}
                stats = self.si.scraper("/_stats")
                cell["scraper_peak_concurrency"], cell["scraper_refused"] = stats["peak"], stats["refused"]
                cell["scraper_call_ms"] = self.scraper_call_ms(latency)
                out.append(cell)
                print(f"  drain N={n:5d} L={latency * 1000:4.0f} ms: {S.fmt(cell['seconds'], ' s')}, "
                      f"limit {limit:.1f} s, ratio {S.fmt(ratio, '', 3)}; consumer CPU "
                      f"{S.fmt(cell['consumer_cpu_ms_per_check'], ' ms')}/check; one stand-in call "
                      f"alone {cell['scraper_call_ms']:.1f} ms", flush=True)
                if n == max(c[0] for c in CELLS) and "rss_after" not in locals():
                    rss_after = {"n": n, "worker_rss_mb": S.rss_mb(consumer.pid)}
            idle_rss = S.rss_mb(consumer.pid)
        finally:
            stop(consumer)
        self.rss_after = rss_after
        self.rss_after["worker_rss_mb_end"] = idle_rss
        return out

    def curve(self) -> list[dict]:
        out = []
        for workers in CURVE_WORKERS:
            consumer = start_consumer(self.env, workers=workers)
            try:
                runs = [self.drain(consumer, CURVE_N, CURVE_L) for _ in range(S.REPEATS)]
            finally:
                stop(consumer)
            limit = CURVE_N * CURVE_L / workers
            point = {"workers": workers, "n": CURVE_N, "latency_s": CURVE_L, "limit_s": limit,
                     "seconds": S.summary([r["seconds"] for r in runs]),
                     "ratio": S.summary([limit / r["seconds"] for r in runs])}
            out.append(point)
            print(f"  workers={workers}: N={CURVE_N} L={CURVE_L * 1000:.0f} ms "
                  f"{S.fmt(point['seconds'], ' s')}, limit {limit:.2f} s, ratio {S.fmt(point['ratio'], '', 3)}",
                  flush=True)
        return out

    def queue_overhead(self) -> dict:
        consumer = start_consumer(self.env)
        storage = self.huey.storage
        payloads = [self.huey.serialize_task(self.noop.s()) for _ in range(NOOPS)]
        runs, per_task = [], []
        try:
            for rep in range(S.REPEATS):
                before = S.redis_calls(self.r)
                started = time.time()
                storage.conn.lpush(storage.queue_key, *payloads)
                key = f"bench:noop_done:{(rep + 1) * NOOPS}"
                done = float(S.wait_for(lambda: self.r.get(key), timeout=600, interval=0.02))
                runs.append(done - started)
                # GET/SET are this benchmark's own completion polling and marker, not the queue's
                calls = S.calls_between(before, S.redis_calls(self.r), ignore=("info", "get", "set"))
                per_task.append(sum(calls.values()) / NOOPS)
                print(f"  {NOOPS} no-ops: {runs[-1]:.2f} s; Redis commands {calls}", flush=True)
        finally:
            stop(consumer)
        return {"tasks": NOOPS, "workers": WORKERS, "seconds": S.summary(runs),
                "tasks_per_s": S.summary([NOOPS / s for s in runs]),
                "redis_commands_per_task": S.summary(per_task), "commands": calls}

    def latency(self) -> dict:
        term = self.next_term()
        nbrs = [f"{20000 + i:05d}" for i in range(CHANGES)]
        sections = [[term, n] for n in nbrs]
        seed_watchers(self.database_url, term, nbrs, per_section=1, prefix="lat")
        self.si.scraper("/_delay", seconds=LATENCY_L)
        self.si.resend("/_reset")
        consumer = start_consumer(self.env)
        try:
            self.si.scraper("/_section", sections=sections, seats=0)
            self.tasks.enqueue_checks([tuple(s) for s in sections])  # baselines: no seats
            S.wait_for(lambda: self.committed(term) >= CHANGES, timeout=300)
            S.wait_for(lambda: not any(self.r.scan_iter(match="*pending*", count=1000)), timeout=60)
            self.si.scraper("/_section", sections=sections, seats=5)  # the seats open
            self.tasks.enqueue_checks([tuple(s) for s in sections])
            accepted = S.wait_for(
                lambda: (lambda a: a if len(a) >= CHANGES else None)(self.si.resend("/_accepted")["accepted"]),
                timeout=300, interval=0.2)
            answered = self.si.scraper("/_stats")["answered_at"]
        finally:
            stop(consumer)
        latencies = []
        for address, at in accepted:
            nbr = address.split("-", 1)[1].split("@")[0]
            latencies.append((at - answered[f"{term}/{nbr}"]) * 1000)
        out = {"changes": CHANGES, "scraper_latency_s": LATENCY_L, "emails": len(accepted),
               "p50_ms": S.percentile(latencies, 50), "p99_ms": S.percentile(latencies, 99),
               "max_ms": max(latencies), "latencies_ms": sorted(latencies)}
        print(f"  seat seen -> email accepted over {CHANGES} changes: p50 {out['p50_ms']:.0f} ms, "
              f"p99 {out['p99_ms']:.0f} ms, max {out['max_ms']:.0f} ms", flush=True)
        return out


def main() -> None:
    database_url = bench_database()
    with redis_server() as redis_url, StandIns() as standins:
        bench = Bench(redis_url, database_url, standins)
        migrate(bench.env)
        print(f"throughput ({'quick' if S.QUICK else 'full' if S.FULL else 'default'} mode, "
              f"load {S.loadavg():.2f}):", flush=True)
        figures = {}
        figures["queue_overhead"] = bench.queue_overhead()
        figures["drain"] = bench.drain_cells()
        figures["worker_rss_after_run"] = bench.rss_after
        print(f"  worker RSS after the {bench.rss_after['n']}-check drain: "
              f"{bench.rss_after['worker_rss_mb']:.1f} MB", flush=True)
        figures["workers_curve"] = bench.curve()
        figures["latency"] = bench.latency()
    S.write("throughput", figures)


if __name__ == "__main__":
    main()
