"""Where the drain ratio's overhead goes (issue 30): the same drain in parts, one after another.

N tasks pushed at once, W = 4 workers, scraper latency L = 50 ms; the limit is N*L/W. Variants,
each drained in turn in the same consumer, the round of four repeated BENCH_REPEATS times:

1. check    the real check_section, pushed by the cron's bulk enqueue (as bench/throughput.py)
2. scrape   a task that only calls the scraper client app.check uses (same stand-in, same L)
   (raw      the same call through a plain urllib3 pool: not in the default set)
3. sleep    a task that only sleeps L: the queue alone
4. db       the real check with the HTTP call replaced by a sleep of L: Redis and the database

A drain ends when its last task completes (stamped in the consumer, bench/_parts.py). Also the
consumer's CPU per task and the stand-in process's CPU per task. Not in run_all: a diagnosis.

Run: SEATWATCH_BENCH_DB=... python bench/drain_parts.py   (BENCH_PARTS_N, BENCH_REPEATS)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import (StandIns, app_env, bench_database, migrate, redis_server,  # noqa: E402
                        start_consumer, stop)

N = int(os.environ.get("BENCH_PARTS_N", "500"))
L = float(os.environ.get("BENCH_PARTS_L", "0.05"))
W = int(os.environ.get("BENCH_PARTS_W", "4"))
VARIANTS = os.environ.get("BENCH_PARTS_VARIANTS", "check,scrape,sleep,db").split(",")


def _busy(before=None):
    """/proc/stat's (busy, total) jiffies, or with `before` the busy share of all cores since."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    now = (sum(v) - v[3] - v[4], sum(v))
    if before is None:
        return now
    return (now[0] - before[0]) / max(1, now[1] - before[1])


def main() -> None:
    database_url = bench_database()
    with redis_server() as redis_url, StandIns() as si:
        env = app_env(redis_url, database_url, **si.env(), BENCH_PARTS="1", BENCH_PARTS_BATCH=str(N))
        os.environ.update(env)
        migrate(env)
        if os.environ.get("BENCH_PARTS_SYNC_COMMIT"):  # diagnosis: is it the commit's WAL flush?
            import psycopg

            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"alter database {database_url.rsplit('/', 1)[1]} set synchronous_commit"
                             f" = {os.environ['BENCH_PARTS_SYNC_COMMIT']}")
        import redis

        from app import tasks
        from app.queue.instance import huey
        from bench import _parts

        r = redis.Redis.from_url(redis_url)
        si.scraper("/_delay", seconds=L)
        custom = {"scrape": _parts.scrape_only, "raw": _parts.scrape_raw, "sleep": _parts.sleep_only, "db": _parts.check_no_scrape}
        consumer = start_consumer(env, workers=W)
        results = {v: [] for v in VARIANTS}
        done, term = 0, 3000
        print(f"drain_parts: N={N} L={L * 1000:.0f} ms W={W}, load {S.loadavg():.2f}", flush=True)
        try:
            for rep in range(S.REPEATS):
                for variant in VARIANTS:
                    term += 1
                    sections = [(str(term), f"{10000 + i:05d}") for i in range(N)]
                    payloads = None
                    if variant != "check":
                        payloads = [huey.serialize_task(custom[variant].s(t, n, L)) for t, n in sections]
                    cpu0, si0 = S.cpu_seconds(consumer.pid), S.cpu_seconds(si.proc.pid)
                    sys0 = _busy()
                    started = time.time()
                    if payloads is None:
                        assert tasks.enqueue_checks(sections) == N
                    else:
                        huey.storage.conn.lpush(huey.storage.queue_key, *payloads)
                    done += N
                    key = f"bench:parts_done:{done}"
                    ended = float(S.wait_for(lambda: r.get(key), timeout=300, interval=0.02))
                    cpu = (S.cpu_seconds(consumer.pid) - cpu0) * 1000 / N
                    si_cpu = (S.cpu_seconds(si.proc.pid) - si0) * 1000 / N
                    took = ended - started
                    busy = _busy(sys0)
                    phases = r.get(f"bench:parts_phases:{done}")
                    phases = ("  db phases median/mean ms: breaker+marker %.2f/%.2f, transaction "
                              "%.2f/%.2f, release %.2f/%.2f" % tuple(x for p in __import__("json").loads(
                                  phases) for x in p)) if phases else ""
                    limit = N * L / W or 1e-9
                    over_ms = (took - limit) * W * 1000 / N  # per check, per worker: above L
                    results[variant].append((limit / took, over_ms, cpu, si_cpu))
                    print(f"  [{rep + 1}] {variant:6s} {took:6.2f} s ratio {limit / took:.3f}  over L "
                          f"{over_ms:5.1f} ms/check  consumer CPU {cpu:5.2f} ms/task  stand-in CPU "
                          f"{si_cpu:5.2f} ms/task  machine busy {busy:.0%} of {os.cpu_count()} cores" + phases, flush=True)
                    time.sleep(1)
        finally:
            stop(consumer)
        print("medians:")
        for v, runs in results.items():
            med = [statistics.median(x[i] for x in runs) for i in range(4)]
            print(f"  {v:6s} ratio {med[0]:.3f} (runs {', '.join(f'{x[0]:.3f}' for x in runs)}); "
                  f"over L {med[1]:.1f} ms/check; consumer CPU {med[2]:.2f} ms/task; "
                  f"stand-in CPU {med[3]:.2f} ms/task", flush=True)


if __name__ == "__main__":
    main()
