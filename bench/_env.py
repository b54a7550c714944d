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
from contextlib import contextmanager

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
