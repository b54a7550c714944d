"""Health under load (item 7): p50/p99 of GET /api/monitoring/health at 100 requests/s.

Directly on waitress here: the real web process (`python -m app web`) against a private
redis-server and the bench database, with a consumer heartbeat so the answer is the healthy one;
the load comes from this (second) process, open loop at a fixed rate (request i leaves at
start + i/rate whatever happened before, and its latency counts from then, so a stall is not
hidden) over at most 16 kept-alive connections. Repeated BENCH_REPEATS times.

Through Caddy on the deployed test host: `bench/on_host.py` uses `open_loop` with a connection
factory that reaches Caddy by name; the deploy test harness calls it.
Prints figures, writes bench/results/health_latency.json.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import ROOT, app_env, bench_database, free_port, migrate, redis_server, stop  # noqa: E402

RATE = float(os.environ.get("HEALTH_RATE", "100"))
SECONDS = float(os.environ.get("HEALTH_SECONDS", "5" if S.QUICK else "15"))
CLIENTS = 16
PATH = "/api/monitoring/health"


def start_web(env: dict, python: str = sys.executable) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([python, "-m", "app", "web", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("web did not start")


def open_loop(port: int | None = None, rate: float = RATE, seconds: float = SECONDS,
              connect=None, path: str = PATH, clients: int = CLIENTS) -> dict:
    """Fixed-rate load; latency (ms) of each answer from its scheduled start."""
    connect = connect or (lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    local = threading.local()
    latencies: list[float] = []
    codes: Counter = Counter()

    def one(due: float) -> None:
        if not hasattr(local, "conn"):
            local.conn = connect()
        try:
            local.conn.request("GET", path)
            resp = local.conn.getresponse()
            resp.read()
            codes[resp.status] += 1
        except (OSError, http.client.HTTPException) as exc:
            codes[type(exc).__name__] += 1
            local.conn.close()
            del local.conn
            return
        latencies.append((time.monotonic() - due) * 1000)

    total = int(rate * seconds)
    begun = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for i in range(total):
            due = begun + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, due)
    took = time.monotonic() - begun
    return {"requests": total, "answered": len(latencies), "clients": clients,
            "codes": {str(k): v for k, v in codes.items()},
            "rate": rate, "seconds": took, "p50_ms": S.percentile(latencies, 50),
            "p99_ms": S.percentile(latencies, 99), "max_ms": max(latencies, default=float("nan"))}


def beat(env: dict) -> None:
    """A consumer heartbeat, so the report is the healthy one a monitor normally gets."""
    os.environ.update(env)
    from app.services import Services
    from app.settings import Settings

    Services(Settings.from_env(env)).heartbeat.beat()


def main() -> None:
    database_url = bench_database()
    with redis_server() as redis_url:
        env = app_env(redis_url, database_url)
        migrate(env)
        beat(env)
        web, port = start_web(env)
        try:
            open_loop(port, seconds=1)  # warm: pools open, first report computed
            runs = [open_loop(port) for _ in range(S.REPEATS)]
        finally:
            stop(web, 20)
    figures = {"direct": {"rate": RATE, "seconds_each": SECONDS, "runs": runs,
                          "p50_ms": S.summary([r["p50_ms"] for r in runs]),
                          "p99_ms": S.summary([r["p99_ms"] for r in runs])}}
    print(f"health at {RATE:.0f}/s directly on waitress, {SECONDS:.0f} s x {len(runs)} (load {S.loadavg():.2f}):")
    print(f"  p50 {S.fmt(figures['direct']['p50_ms'], ' ms')}, p99 {S.fmt(figures['direct']['p99_ms'], ' ms')}; "
          f"codes {[r['codes'] for r in runs]}")
    S.write("health_latency", figures)


if __name__ == "__main__":
    main()
