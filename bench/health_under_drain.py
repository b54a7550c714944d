"""Health while the checks drain, and the one-process alternative (issue 30).

Two layouts, one after the other in the same run, each against the same private redis-server,
the bench database and the stand-in scraper at L = 50 ms (bench/_standins.py):

- separate (the deploy's layout, the "before"): the web process (`python -m app web`) and the
  consumer (bench/_consumer.py: app.queue.worker's flags) as two processes;
- one process: bench/_oneprocess.py, waitress on a thread beside the consumer (bench-only).

For each: the memory at rest after the processes settle (RSS, PSS, USS, anon/file:
bench/_memfig.py; the PSS sum is what the layout takes from the machine), then N checks (10,000;
BENCH_QUICK: 2,000) are pushed onto the queue as the cron does it, and health is loaded at 100
requests/s directly on waitress (bench/health_latency.py's open loop) for N*L/W seconds, the
drain's lower bound, so every request falls inside the drain; the drain's own time is kept too
(does serving health slow the checks?). Target: health p99 <= 20 ms on waitress.
Separate first, then one process (HUD_ONE_FIRST=1: the other order). Both layouts run in the runtime-only virtualenv (bench/memory.py's .venv-runtime).
Prints figures, writes bench/results/health_under_drain.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _memfig, _stats as S  # noqa: E402
from bench._env import ROOT, bench_service, free_port, stop  # noqa: E402
from bench.health_latency import open_loop, start_web  # noqa: E402
from bench.memory import PY, runtime_venv  # noqa: E402

N = int(os.environ.get("DRAIN_N", "2000" if S.QUICK else "10000"))
LATENCY = 0.05
WORKERS = 4
RATE = 100
SETTLE_S = 5


def _ready(proc: subprocess.Popen, env: dict, port: int | None = None) -> None:
    """Up: the consumer's start-up heartbeat is in Redis and, with a port, waitress answers."""
    import socket

    r = redis.Redis.from_url(env["REDIS_URL"])
    key = f"{env['SEATWATCH_NAME']}:heartbeat"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if port:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if r.exists(key):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{proc.args} did not start")


def separate(env: dict) -> tuple[list[subprocess.Popen], int]:
    consumer = subprocess.Popen([PY, "-m", "bench._consumer"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _ready(consumer, env)
    web, port = start_web(env, python=PY)
    return [web, consumer], port


def one_process(env: dict) -> tuple[list[subprocess.Popen], int]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "bench._oneprocess", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _ready(proc, env, port)
    return [proc], port


def run_layout(name: str, start, env: dict, tasks, db, term: str) -> dict:
    procs, port = start(env)
    try:
        time.sleep(SETTLE_S)
        figs = [_memfig.of_pid(p.pid) for p in procs]
        rest = {"processes": figs, "sum": _memfig.total(figs)}
        idle = open_loop(port, rate=RATE, seconds=5)  # the first 5 s after start, idle: warm-up included
        sections = [(term, f"{10000 + i:05d}") for i in range(N)]
        started = time.monotonic()
        assert tasks.enqueue_checks(sections) == N
        load = open_loop(port, rate=RATE, seconds=N * LATENCY / WORKERS)

        def committed() -> bool:
            return db.execute("select count(*) from public.seatwatch_section_states where term = %s",
                              (term,)).fetchone()[0] >= N

        S.wait_for(committed, timeout=N * LATENCY * 2, interval=0.2)
        drain_s = time.monotonic() - started
        after = [_memfig.of_pid(p.pid) for p in procs]
    finally:
        for p in procs:
            stop(p, 20)
    out = {"layout": name, "at_rest": rest, "after_drain": {"processes": after, "sum": _memfig.total(after)},
           "health_idle": idle, "health_under_drain": load, "drain_seconds": drain_s,
           "drain_limit_seconds": N * LATENCY / WORKERS}
    print(f"  {name}: at rest {_memfig.brief(rest['sum'])}; health idle (first 5 s, warm-up) p99 {idle['p99_ms']:.1f} ms; "
          f"under a {N}-check drain p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, "
          f"max {load['max_ms']:.0f} ms, codes {load['codes']}; drain {drain_s:.1f} s "
          f"(limit {N * LATENCY / WORKERS:.1f} s)", flush=True)
    return out


def main() -> None:
    runtime_venv()
    with bench_service(standins=True) as (env, si):
        from app import tasks

        si.scraper("/_delay", seconds=LATENCY)
        db = psycopg.connect(env["DATABASE_URL"], autocommit=True)
        print(f"health under a drain (N={N}, L={LATENCY * 1000:.0f} ms, {WORKERS} workers, "
              f"health at {RATE}/s; load {S.loadavg():.2f}):", flush=True)
        order = [("separate", separate, "3001"), ("one_process", one_process, "3002")]
        if os.environ.get("HUD_ONE_FIRST"):  # the other order, to see the machine's drift
            order.reverse()
        layouts = {name: run_layout(name, start, env, tasks, db, term) for name, start, term in order}
    sep, one = layouts["separate"], layouts["one_process"]
    ratio = one["at_rest"]["sum"]["pss"] / sep["at_rest"]["sum"]["pss"]
    print(f"  one process / separate, PSS at rest: {ratio:.2f} "
          f"({one['at_rest']['sum']['pss']:.1f} vs {sep['at_rest']['sum']['pss']:.1f} MB)")
    S.write("health_under_drain", {"order": list(layouts), "n": N, "latency_s": LATENCY, "workers": WORKERS, "rate": RATE,
                                   "separate": sep, "one_process": one, "pss_ratio_one_vs_separate": ratio})


if __name__ == "__main__":
    main()
