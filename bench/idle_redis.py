"""An idle consumer: Redis commands it issues, how fast it stops, how fast it picks up a check.

Managed Redis free tiers count every command (Upstash: 500K a month), and every deploy waits for
the worker's graceful stop: issue 12 wants both low at once. Each configuration runs the real
consumer process against a private redis-server (the deploy's settings: 4 thread workers, the
default read timeout); after a 5 s start-up the counters are reset (CONFIG RESETSTAT) and
`INFO commandstats` is read after BENCH_SECONDS (default 600: at least 10 minutes). Then one check
is pushed onto the idle queue (pickup: until a worker has popped it) and the process gets SIGINT
(stop: until it exits). The configurations run side by side. Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._env import app_env, bench_database, redis_server  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "600"))
NAME = "seatwatch-bench"  # app_env's SEATWATCH_NAME; huey's queue key drops the dash
QUEUE_KEY = "huey.redis.seatwatchbench"
BENCH_OWN = {"info", "config|resetstat", "config", "llen", "lpush"}  # this script's commands

# huey as it comes: its RedisHuey and RedisStorage (1 s blocking reads, Lua schedule pop), its
# Consumer (scheduler every second), on this project's queue name and Redis.
STOCK_HUEY = ("from huey import RedisHuey; from huey.consumer import Consumer; "
              "from app.settings import get_settings; s = get_settings(); "
              "Consumer(RedisHuey(s.name, url=s.redis_url), workers=4, worker_type='thread').run()")
CONFIGS = {
    "huey defaults (RedisHuey, Consumer -w 4 -k thread)": (["-c", STOCK_HUEY], {}),
    # what PM2 runs: python -m app worker
    "this project (python -m app worker)": (["-m", "app", "worker"], {}),
}


def a_check_payload() -> bytes:
    """One serialized check task, as a cron run would push it (serializing needs no Redis)."""
    os.environ.update(app_env("redis://127.0.0.1:9/0", "postgresql://127.0.0.1:9/none"))
    from app import tasks

    return tasks.huey.serialize_task(tasks.check_section.s("2261", "12430", time.time(), None))


def commandstats(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_") if isinstance(name, str) else name: v["calls"]
            for name, v in client.info("commandstats").items()}


def measure(args: list[str], extra_env: dict, database_url: str, payload: bytes) -> dict:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        env = app_env(url, database_url, **extra_env)
        proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up (connections, first heartbeat, catch-up) is not idle traffic
            client.config_resetstat()
            time.sleep(SECONDS)
            stats = {k: v for k, v in commandstats(client).items() if k not in BENCH_OWN}
            pushed = time.monotonic()
            client.lpush(QUEUE_KEY, payload)
            while client.llen(QUEUE_KEY) and time.monotonic() - pushed < 30:
                time.sleep(0.002)
            pickup = time.monotonic() - pushed
            time.sleep(1)  # let the check fail against the placeholder scraper: idle again
            stopping = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=150)
            stop = time.monotonic() - stopping
            return {"stats": stats, "pickup": pickup, "stop": stop}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    database_url = bench_database()
    subprocess.run([sys.executable, "-m", "app", "migrate", "--bootstrap"], check=True, cwd=ROOT,
                   env=app_env("redis://127.0.0.1:6379/0", database_url), stdout=subprocess.DEVNULL)
    payload = a_check_payload()
    print(f"idle consumer, {SECONDS:.0f} s each (side by side), Redis commands (INFO commandstats):")
    with ThreadPoolExecutor(len(CONFIGS)) as pool:
        futures = {label: pool.submit(measure, args, extra, database_url, payload)
                   for label, (args, extra) in CONFIGS.items()}
        results = {label: f.result() for label, f in futures.items()}
    for label, r in results.items():
        n = sum(r["stats"].values())
        per_day = n / SECONDS * 86400
        top = ", ".join(f"{k} {v}" for k, v in sorted(r["stats"].items(), key=lambda kv: -kv[1])[:5])
        print(f"  {label:48s} {n:6d} in {SECONDS:.0f} s  ~{per_day:9,.0f}/day  "
              f"~{per_day * 30:11,.0f}/month")
        print(f"  {'':48s} pickup {r['pickup'] * 1000:6.0f} ms, SIGINT to exit {r['stop']:6.2f} s"
              f"  ({top})")


if __name__ == "__main__":
    main()
