"""What one round trip to another process costs right after a wait (issue 30): hot vs cold.

The drain at L = 50 ms spends far more per check than the same work back to back: each worker
waits 50 ms on the scraper, and what it then asks of PostgreSQL and Redis runs in caches that
other work has evicted. This measures, with nothing else of ours running, the median wall time of:
- a pipe echo with a tiny forked process (the OS's wake-up alone), a Redis PING, a PostgreSQL
  `select 1`, each after a gap of 0 to 50 ms;
- the check's own transaction (app.db.watches: the locked read, the upsert, COMMIT) with one
  worker back to back and four workers each waiting 50 ms first, with psycopg's prepared
  statements off (as the app: prepare_threshold=None) and on (prepare_threshold=0).
A diagnosis, not in run_all. Run: SEATWATCH_BENCH_DB=... python bench/cold_round_trips.py
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._env import app_env, bench_database, migrate, redis_server  # noqa: E402

GAPS = (0.0, 0.001, 0.005, 0.05)


def _median_ms(call, gap: float) -> float:
    took = []
    for _ in range(300 if gap < 0.01 else 80):
        if gap:
            time.sleep(gap)
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def _transactions(database_url: str, workers: int, gap: float, prepare, term: str, n: int = 200) -> float:
    import psycopg
    from psycopg.rows import dict_row

    from app.check.changes import state_values
    from app.check.scraper import parse_section
    from app.db import watches

    info = parse_section({"success": True, "data": {
        "subject": "CSE", "catalog_nbr": "110", "title": "P", "instructor": "Staff", "seats_available": 0,
        "seats_capacity": 100, "non_reserved_seats": None, "location": "B", "meeting_times": "MW"}})
    conns = [psycopg.connect(database_url, prepare_threshold=prepare, row_factory=dict_row)
             for _ in range(workers)]
    took, lock, todo = [], threading.Lock(), iter(range(n))

    def work(conn) -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            time.sleep(gap)
            started = time.perf_counter()
            with conn.transaction():
                _, _, at = watches.lock_section_state(conn, term, f"{10000 + i:05d}", time.monotonic())
                watches.save_states(conn, term, f"{10000 + i:05d}", state_values(info), at, "bench")
            with lock:
                took.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return statistics.median(took)


def main() -> None:
    import psycopg
    import redis

    database_url = bench_database()
    with redis_server() as redis_url:
        migrate(app_env(redis_url, database_url))
        a, b = socket.socketpair()
        child = os.fork()
        if child == 0:  # the echo: as small a process as there is
            a.close()
            while data := b.recv(64):
                b.send(data)
            os._exit(0)
        b.close()
        r = redis.Redis.from_url(redis_url)
        pg = psycopg.connect(database_url, autocommit=True, prepare_threshold=None)
        print("one round trip, median ms, after a gap of:", flush=True)
        for gap in GAPS:
            echo = _median_ms(lambda: (a.send(b"x"), a.recv(64)), gap)
            ping = _median_ms(r.ping, gap)
            sel = _median_ms(lambda: pg.execute("select 1").fetchone(), gap)
            print(f"  {gap * 1000:4.0f} ms: pipe echo {echo:.3f}, Redis PING {ping:.3f}, "
                  f"PostgreSQL select 1 {sel:.3f}", flush=True)
        a.close()
        os.waitpid(child, 0)
        print("the check's transaction, median ms:", flush=True)
        term = 7000
        for rep in range(2):
            for workers, gap in ((1, 0.0), (4, 0.05)):
                for prepare in (None, 0):
                    term += 1
                    ms = _transactions(database_url, workers, gap, prepare, str(term))
                    print(f"  [{rep + 1}] W={workers} each waiting {gap * 1000:.0f} ms, prepare_threshold="
                          f"{prepare}: {ms:.2f}", flush=True)


if __name__ == "__main__":
    main()
