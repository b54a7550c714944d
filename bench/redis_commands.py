"""Redis commands per quiet check, per notifying check, per cron run and per idle day (item 5),
and what a per-command-billed Redis (500K commands a month free) can carry.

The real consumer (app.queue.worker's flags: 4 workers, 60 s blocking reads, -s 60) on a private
redis-server, watched with MONITOR, which names each command and whether a client sent it or a
Lua script ran it (the breaker's script runs TIME, HMGET, HSET inside one EVALSHA). A provider
that bills per command sent counts the first; the second is given for one that bills a script's
inner calls too. A check's figure includes its share of the cron run's enqueue (one marker
SET NX, 1/1000 of an LPUSH).

Idle: IDLE_SECONDS (default 120; 40 quick) of the idle consumer (INFO commandstats: MONITOR does
not show a blocking read that timed out), scaled to a day. The 5-minute heartbeat and sweep are
measured separately (enqueued through the queue, as the scheduler does) and added 288 times a
day; any that fired inside the idle window are taken out of it.
Prints figures, writes bench/results/redis_commands.json.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter

import psycopg
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import bench_service, seed_watchers, start_consumer, stop  # noqa: E402

IDLE_SECONDS = float(os.environ.get("IDLE_SECONDS", "40" if S.QUICK else "120"))
CHECKS = 20 if S.QUICK else 100
FREE_MONTH = 500_000
STOP = "bench-monitor-stop"


class Monitor(threading.Thread):
    """Counts commands seen by MONITOR, split into client-sent and script-run."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        # no socket timeout: MONITOR waits as long as the idle consumer stays silent
        self.client = redis.Redis.from_url(url, socket_timeout=None)
        self.stopper = redis.Redis.from_url(url)
        self.stopper.ping()  # connected now, so its HELLO is not counted in the window
        self.sent: Counter = Counter()
        self.scripted: Counter = Counter()
        self.ready = threading.Event()

    def run(self) -> None:
        with self.client.monitor() as m:
            self.ready.set()
            for cmd in m.listen():
                text = cmd["command"]
                if STOP in text:
                    return
                name = text.split(" ", 1)[0].lower()
                if name == "monitor":
                    continue
                (self.scripted if cmd.get("client_type") == "lua" else self.sent)[name] += 1

    def __enter__(self):
        self.start()
        self.ready.wait(5)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.stopper.echo(STOP)
        self.join(10)


def window(url: str, fn) -> tuple[Counter, Counter]:
    with Monitor(url) as mon:
        fn()
    mon.sent.pop("echo", None)
    return mon.sent, mon.scripted


def main() -> None:
    with bench_service(standins=True) as (env, si):
        database_url, url = env["DATABASE_URL"], env["REDIS_URL"]
        from app import tasks
        db = psycopg.connect(database_url, autocommit=True)

        def checked_since(term: str, since) -> int:
            return db.execute("select count(*) from public.seatwatch_section_states where term = %s "
                              "and scraped_at > %s", (term, since)).fetchone()[0]

        quiet = [("2261", f"{10000 + 2 * i:05d}") for i in range(CHECKS)]  # even: cron "odd" finds none
        noisy = [("2262", f"{20000 + 2 * i:05d}") for i in range(CHECKS)]
        seed_watchers(database_url, "2262", [n for _, n in noisy])
        consumer = start_consumer(env)
        from app.queue.instance import huey
        from app.services import get_services

        get_services().redis.ping()  # this process's connections are open before any window,
        huey.storage.conn.ping()     # so their HELLOs are not billed to a check
        try:
            def drain(sections):
                since = db.execute("select now()").fetchone()[0]
                tasks.enqueue_checks(sections)
                S.wait_for(lambda: checked_since(sections[0][0], since) >= len(sections), 300)
                time.sleep(0.5)  # the last pending markers are released after the commit

            drain(quiet)  # baselines, not measured
            drain(noisy)
            quiet_sent, quiet_lua = window(url, lambda: drain(quiet))
            si.scraper("/_section", sections=[list(s) for s in noisy], seats=5)

            def notify():
                drain(noisy)
                S.wait_for(lambda: len(si.resend("/_accepted")["accepted"]) >= CHECKS, 120)

            noisy_sent, noisy_lua = window(url, notify)
            cron_sent, cron_lua = window(url, lambda: tasks.run_cron_now("odd"))

            def periodic():
                # the housekeeping jobs as the scheduler's tick calls them (app.queue.consumer)
                from datetime import datetime, timezone

                now = datetime.now(timezone.utc)
                tasks.heartbeat(now, True)
                tasks.sweep_undelivered(now, True)
                time.sleep(2)

            per_sent, per_lua = window(url, periodic)
            # MONITOR does not show a blocking read that times out, INFO commandstats does: the
            # idle window is counted there (script-inner calls, seen by MONITOR, taken out)
            stats = redis.Redis.from_url(url)
            # The consumer adds what it counted in the windows above to its metrics hash on its
            # next scheduler tick (app.workstats: once, then nothing while nothing is counted).
            # That flush is the busy minutes' cost, not the idle day's: wait for it (at most one
            # tick) before the idle window opens, or its HSET would pass for a heartbeat.
            stats_key = get_services().keys.work_stats
            flushed = stats.hgetall(stats_key)
            try:
                S.wait_for(lambda: stats.hgetall(stats_key) != flushed, timeout=65, interval=0.5)
            except TimeoutError:
                pass  # flushed before we looked: nothing left to wait for
            before = S.redis_calls(stats)
            idle_sent, idle_lua = window(url, lambda: time.sleep(IDLE_SECONDS))
            idle_sent = Counter(S.calls_between(before, S.redis_calls(stats),
                                                ignore=("info", "monitor", "echo", "hello")))
            idle_sent.subtract(idle_lua)
            idle_sent = +idle_sent
            # the heartbeat's HSET marks each 5-minute run that fell inside the window
            fired = idle_sent.get("hset", 0)
        finally:
            stop(consumer)

    def total(c: Counter) -> int:
        return sum(c.values())

    per_quiet, per_noisy = total(quiet_sent) / CHECKS, total(noisy_sent) / CHECKS
    idle_window = max(0, total(idle_sent) - fired * total(per_sent))
    idle_day = idle_window / IDLE_SECONDS * 86400 + 288 * total(per_sent)
    cron_month = total(cron_sent) * 2 * 24 * 30
    idle_month = idle_day * 30
    capacity = (FREE_MONTH - idle_month - cron_month) / (24 * 30 * per_quiet)
    per_quiet_all = (total(quiet_sent) + total(quiet_lua)) / CHECKS
    idle_day_all = ((total(idle_sent) + total(idle_lua) - fired * (total(per_sent) + total(per_lua)))
                    / IDLE_SECONDS * 86400 + 288 * (total(per_sent) + total(per_lua)))
    capacity_all = (FREE_MONTH - idle_day_all * 30 - (total(cron_sent) + total(cron_lua)) * 1440) / (
        720 * per_quiet_all)
    figures = {
        "quiet_check": {"commands": per_quiet, "by_command": dict(quiet_sent),
                        "script_inner": total(quiet_lua) / CHECKS},
        "notifying_check": {"commands": per_noisy, "by_command": dict(noisy_sent),
                            "script_inner": total(noisy_lua) / CHECKS},
        "cron_run_fixed": {"commands": total(cron_sent), "by_command": dict(cron_sent)},
        "periodic_5min": {"commands": total(per_sent), "by_command": dict(per_sent)},
        "idle": {"seconds": IDLE_SECONDS, "commands_in_window": total(idle_sent),
                 "periodic_runs_in_window": fired, "by_command": dict(idle_sent),
                 "per_day": idle_day, "per_month": idle_month},
        "capacity": {"free_month": FREE_MONTH, "sections_hourly": capacity,
                     "sections_hourly_if_script_calls_billed": capacity_all,
                     "cron_month": cron_month},
    }
    print(f"Redis commands (client-sent; load {S.loadavg():.2f}):")
    print(f"  quiet check      {per_quiet:5.2f}  {dict(quiet_sent)}  (+{total(quiet_lua) / CHECKS:.1f} inside scripts)")
    print(f"  notifying check  {per_noisy:5.2f}  {dict(noisy_sent)}")
    print(f"  cron run (fixed part) {total(cron_sent)}  {dict(cron_sent)}")
    print(f"  heartbeat + sweep (every 5 min) {total(per_sent)}  {dict(per_sent)}")
    print(f"  idle: {total(idle_sent)} in {IDLE_SECONDS:.0f} s ({fired} periodic runs inside) "
          f"-> ~{idle_day:,.0f}/day, ~{idle_month:,.0f}/month")
    print(f"  500K/month carries ~{capacity:,.0f} sections checked hourly "
          f"(~{capacity_all:,.0f} if a script's inner calls are billed too)")
    S.write("redis_commands", figures)


if __name__ == "__main__":
    main()
