"""Redis commands an idle consumer issues, with huey's defaults versus this project's flags.

Managed Redis free tiers count every command (Upstash: 500K a month), so this is the cost of
pointing REDIS_URL at one. Each configuration runs the real consumer against a private
redis-server for BENCH_SECONDS (default 180) and the count is scaled to a day and a month.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._env import app_env, bench_database, redis_server  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "180"))

CONFIGS = {
    # huey's own defaults: 1 s blocking reads, scheduler every second
    "huey defaults (-w 4 -k thread)": (
        ["-m", "huey.bin.huey_consumer", "app.tasks.huey", "-w", "4", "-k", "thread"],
        {"HUEY_READ_TIMEOUT_SECONDS": "1"}),
    # what PM2 runs: python -m app worker
    "this project (python -m app worker)": (["-m", "app", "worker"], {}),
}


def measure(args: list[str], extra_env: dict, database_url: str) -> int:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        env = app_env(url, database_url, **extra_env)
        proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up (connections, heartbeat) is not idle traffic
            before = client.info("stats")["total_commands_processed"]
            time.sleep(SECONDS)
            return client.info("stats")["total_commands_processed"] - before - 1
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    database_url = bench_database()
    subprocess.run([sys.executable, "-m", "app", "migrate", "--bootstrap"], check=True, cwd=ROOT,
                   env=app_env("redis://127.0.0.1:6379/0", database_url), stdout=subprocess.DEVNULL)
    print(f"idle consumer, {SECONDS:.0f} s each, Redis commands:")
    for label, (args, extra) in CONFIGS.items():
        n = measure(args, extra, database_url)
        per_day = n / SECONDS * 86400
        print(f"  {label:38s} {n:6d} in {SECONDS:.0f} s  ~{per_day:9,.0f}/day  ~{per_day * 30:11,.0f}/month")


if __name__ == "__main__":
    main()
