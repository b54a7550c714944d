"""Environment for benchmarks: a throwaway Redis server and database on this machine.

Benchmarks never touch the test or production keys: each starts its own redis-server on a free
port (so its command counters see only the benchmark) and uses a database of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager, nullcontext

import psycopg

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Overridable so two people benchmarking on one machine do not drop each other's database.
BENCH_DB = os.environ.get("SEATWATCH_BENCH_DB", "seatwatch_bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server():
    """A private redis-server; yields its URL."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="seatwatch-bench-")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def bench_database() -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {BENCH_DB} with (force)")
        conn.execute(f"create database {BENCH_DB}")
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def app_env(redis_url: str, database_url: str, **extra: str) -> dict:
    """Settings for a benchmark process (placeholders for the outside services: never called)."""
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SCRAPER_URL": "http://127.0.0.1:9",
        "SCRAPER_SECRET_TOKEN": "bench",
        "RESEND_API_KEY": "re_bench",
        "RESEND_API_URL": "http://127.0.0.1:9",
        "NOTIFICATION_FROM_EMAIL": "bench@example.test",
        "NEXT_PUBLIC_SITE_URL": "https://bench.example",
        "CRON_SECRET": "bench",
        "SUPABASE_SERVICE_ROLE_KEY": "bench",
        "SEATWATCH_NAME": "seatwatch-bench",
    })
    env.update(extra)
    return env


# --- the stand-in scraper and Resend, in a process of their own (bench/_standins.py) ------------

class StandIns:
    """Starts bench/_standins.py; `scraper(...)`/`resend(...)` steer it; stops with the parent."""

    def __init__(self):
        import json
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench._standins"], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        urls = json.loads(self.proc.stdout.readline())
        self.scraper_url, self.resend_url = urls["scraper"], urls["resend"]

    def _post(self, base: str, path: str, body: dict | None = None) -> dict:
        import json
        import urllib.request

        req = urllib.request.Request(base + path, data=json.dumps(body or {}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def scraper(self, path: str, **body) -> dict:
        return self._post(self.scraper_url, path, body)

    def resend(self, path: str, **body) -> dict:
        return self._post(self.resend_url, path, body)

    def env(self) -> dict:
        """Settings that point the app at these stand-ins."""
        from tests.fakes import RESEND_KEY, SCRAPER_TOKEN

        return {"SCRAPER_URL": self.scraper_url, "SCRAPER_SECRET_TOKEN": SCRAPER_TOKEN,
                "RESEND_API_URL": self.resend_url, "RESEND_API_KEY": RESEND_KEY}

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the app's processes and a database with watchers ------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def migrate(env: dict) -> None:
    import sys

    subprocess.run([sys.executable, "-m", "app", "migrate", "--bootstrap"], check=True, cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)


def start_consumer(env: dict, workers: int | None = None, heartbeat_key: str | None = None,
                   redis_url: str | None = None) -> subprocess.Popen:
    """The real consumer (bench/_consumer.py = app.queue.worker's flags), started and ready: its
    start-up heartbeat is in Redis."""
    import sys

    import redis

    extra = {"BENCH_WORKERS": str(workers)} if workers else {}
    proc = subprocess.Popen([sys.executable, "-m", "bench._consumer"], cwd=ROOT,
                            env={**env, **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(redis_url or env["REDIS_URL"])
    key = heartbeat_key or f"{env.get('SEATWATCH_NAME', 'seatwatch')}:heartbeat"
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"consumer exited with {proc.returncode}")
        if client.exists(key):
            time.sleep(0.5)  # the worker threads are entering their first blocking read
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("consumer did not start")


@contextmanager
def bench_service(standins: bool = False, set_environ: bool = True):
    """What most benchmarks start from: a private redis-server, a fresh benchmark database with
    the schema, optionally the stand-in scraper and Resend, and the app's settings for them.
    Yields (env, StandIns or None); with set_environ, this process's os.environ has them too
    (a benchmark that runs the app in this process)."""
    database_url = bench_database()
    with redis_server() as redis_url, (StandIns() if standins else nullcontext()) as si:
        env = app_env(redis_url, database_url, **(si.env() if si else {}))
        migrate(env)
        if set_environ:
            os.environ.update(env)
        yield env, si


def stop(proc: subprocess.Popen, timeout: float = 5) -> None:
    """SIGINT, then a kill after `timeout`: the figures are taken by then, and huey's graceful
    stop waits out every idle worker's blocking read (60 s), which would only slow the bench."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # what PM2 sends: the graceful stop
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed_watchers(database_url: str, term: str, class_nbrs: list[str], per_section: int = 1,
                  prefix: str = "w") -> None:
    """`per_section` users, each watching one section of `term`, for each class number
    (no profile row: eligible). Emails are `{prefix}{i}-{class_nbr}@example.test`."""
    nbrs = [n for n in class_nbrs for _ in range(per_section)]
    emails = [f"{prefix}{i % per_section}-{n}@example.test" for i, n in enumerate(nbrs)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """with u as (
                   insert into auth.users (email) select unnest(%s::text[]) returning id, email)
               insert into public.class_watches (user_id, term, subject, catalog_nbr, class_nbr)
               select u.id, %s, 'CSE', '110', split_part(split_part(u.email, '-', 2), '@', 1)
               from u""",
            (emails, term))
