"""The public health URL under load: PostgreSQL sessions before, during and after.

Starts the real web process (`python -m app web`, waitress) against a private redis-server and a
benchmark database, then sends HEALTH_RATE requests a second (default 200) for HEALTH_SECONDS
(default 15) from a bounded client pool on 127.0.0.1, anonymously, as a stranger could. A sampler
counts the database's sessions (pg_stat_activity) every 0.25 s throughout. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._env import BENCH_DB, app_env, bench_database, redis_server  # noqa: E402
from bench.health_latency import beat, open_loop, start_web  # noqa: E402

RATE = float(os.environ.get("HEALTH_RATE", "200"))
SECONDS = float(os.environ.get("HEALTH_SECONDS", "15"))
CLIENTS = 32  # concurrent client connections at most (bounded load)
PATH = "/api/monitoring/health"


class Sessions(threading.Thread):
    """Samples the number of sessions on the benchmark database (its own excluded)."""

    def __init__(self, admin_dsn: str):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(admin_dsn, autocommit=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def count(self) -> int:
        return self.conn.execute(
            "select count(*) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
            (BENCH_DB,)).fetchone()[0]

    def opened(self) -> int:
        """Sessions ever established to the database (PostgreSQL 14+; reported within ~1 s)."""
        return self.conn.execute("select sessions from pg_stat_database where datname = %s",
                                 (BENCH_DB,)).fetchone()[0]

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.samples.append((time.monotonic(), self.count()))

    def between(self, start: float, end: float) -> list[int]:
        return [n for t, n in self.samples if start <= t <= end]


def main() -> None:
    database_url = bench_database()
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with redis_server() as redis_url:
        env = app_env(redis_url, database_url)
        subprocess.run([sys.executable, "-m", "app", "migrate", "--bootstrap"], check=True, cwd=ROOT,
                       env=env, stdout=subprocess.DEVNULL)
        beat(env)
        sampler = Sessions(admin)
        before_web = sampler.count()
        proc, port = start_web(env)
        try:
            sampler.start()
            time.sleep(2)
            idle_start = time.monotonic()
            time.sleep(2)  # web up, no request yet
            before = sampler.between(idle_start, time.monotonic())
            opened_before = sampler.opened()
            during_start = time.monotonic()
            load = open_loop(port, rate=RATE, seconds=SECONDS, clients=CLIENTS)
            during = sampler.between(during_start, time.monotonic())
            after_start = time.monotonic()
            time.sleep(3)
            after = sampler.between(after_start, time.monotonic())
            opened_during = sampler.opened() - opened_before
        finally:
            sampler.stop.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    took = load["seconds"]
    print(f"health load: {load['requests']} requests at {RATE:.0f}/s target, {CLIENTS} client "
          f"connections, 127.0.0.1, anonymous")
    print(f"  sent in {took:.1f} s = {load['answered'] / took:.0f} answered/s; status codes: {load['codes']}")
    print(f"  latency ms (from each request's scheduled start): p50 {load['p50_ms']:.1f}, "
          f"p99 {load['p99_ms']:.1f}, max {load['max_ms']:.1f}")
    print("  PostgreSQL sessions on the database (min-max over samples):")
    print(f"    before web start      {before_web}")
    print(f"    web up, idle          {min(before, default=0)}-{max(before, default=0)}  ({len(before)} samples)")
    print(f"    during load           {min(during, default=0)}-{max(during, default=0)}  ({len(during)} samples)")
    print(f"    after load            {min(after, default=0)}-{max(after, default=0)}  ({len(after)} samples)")
    print(f"  sessions opened during the load: {opened_during}")


if __name__ == "__main__":
    main()
