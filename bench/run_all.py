"""`make bench`: every benchmark in turn, then bench/results/README.md and the plots.

Each benchmark runs in a process of its own (its own redis-server and database), prints its
figures and writes bench/results/<name>.json; bench/report.py turns those into the report.
BENCH_QUICK=1: a smoke run (small sizes, one repeat, a few minutes). BENCH_FULL=1: the issue's
whole N x latency grid (about an hour more). bullmq_compare runs first, so its ratios (ours / BullMQ
in the same rounds) are taken while the machine is as it was when the run began. Order matters once: memory reads the worker's RSS
after the 10,000-check drain from throughput.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402

BENCHES = ["bullmq_compare", "check_cost", "db_round_trips", "cron_run", "redis_commands",
           "health_latency", "throughput", "memory", "health_under_drain"]
# The older benchmarks, kept: they print figures the README cites.
# bench/idle_redis.py (huey's defaults versus ours, idle) is `make bench-idle`: its graceful stops
# alone take minutes, and redis_commands measures our idle traffic here.
EXTRA = [("enqueue", {}), ("health_load", {"HEALTH_SECONDS": "5"})]
# per benchmark settings: the check's profile (an extra pass, not counted) for the report
ENV = {"check_cost": {"BENCH_PROFILE": "1"}, **dict(EXTRA)}


def main() -> None:
    started = time.monotonic()
    log = []
    for name in BENCHES + [n for n, _ in EXTRA]:
        env = {**os.environ, **ENV.get(name, {})}
        t0 = time.monotonic()
        print(f"== bench/{name}.py", flush=True)
        cp = subprocess.run([sys.executable, f"bench/{name}.py"], cwd=S.ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        print(cp.stdout, end="", flush=True)
        log.append({"name": name, "seconds": round(time.monotonic() - t0, 1), "rc": cp.returncode,
                    "output": cp.stdout})
        if cp.returncode:
            print(f"   (exit {cp.returncode})", flush=True)
    S.write("run", {"benches": log, "total_seconds": round(time.monotonic() - started, 1)})
    from bench import report

    print(f"== report: {report.main()} ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
