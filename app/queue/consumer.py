"""huey's own consumer, extended through the classes it lets us swap (`scheduler_class`, `stop`).

Why each extension exists:

- Consumer.stop wakes this process's idle workers: each blocking read also listens on a wake-up
  list of this process alone (`huey.wake.<name>.<host>.<pid>`, see app.queue.instance.WakeableRedisStorage).
  A graceful stop pushes one token per worker there, so idle workers return from their read at
  once and a stop no longer waits out the read timeout (issue 12: 53 s before). Busy workers finish
  their task and exit without reading again (huey's loop checks the stop flag first). The list is
  per process, so a stop never touches another host's or process's workers.
- Scheduler runs the housekeeping jobs registered with `huey.on_tick` on each tick (every
  SCHEDULER_INTERVAL), each in a thread of its own so a slow one (a sweep waiting on Resend) never
  delays the tick or another job, and nothing of it waits in the check queue. A job whose previous
  run still goes is skipped for that tick. On a `-n` host (no periodic scheduler) only the jobs not
  marked `scheduler_only` run: the heartbeat, so every host still reports itself.
- A graceful stop also waits (within the same bound) for housekeeping runs in progress, so a cron
  run is never cut between its slot marker and its enqueue.
- quiet_task_logs: huey writes two INFO lines per task ("Executing ...", "... executed in ...")
  on its "huey" logger: three quarters of its own CPU per task (bench/results, issue 20), and
  lines nobody reads for 10,000 checks an hour. They go; the consumer's own INFO lines (start,
  stop, "huey.consumer") and every warning and error (a task's exception, a timeout) stay.
  `-v` (DEBUG) keeps them all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone

from huey import consumer as huey_consumer

from app.settings import hostname

log = logging.getLogger(__name__)

WAKE_KEY_TTL_SECONDS = 60  # tokens left by busy workers vanish on their own


def wake_key(huey) -> str:
    return f"huey.wake.{huey.storage.name}.{hostname()}.{os.getpid()}"


class Housekeeping:
    """Runs the registered jobs that are due, each on its own thread."""

    def __init__(self, jobs, scheduler: bool):
        self.jobs = [j for j in jobs if scheduler or not j.scheduler_only]
        self.scheduler = scheduler
        self._last: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def tick(self, now: datetime) -> None:
        mono = time.monotonic()
        with self._lock:
            for job in self.jobs:
                running = self._threads.get(job.name)
                if running is not None and running.is_alive():
                    log.warning("housekeeping %s still running, skipped this tick", job.name)
                    continue
                last = self._last.get(job.name)
                if job.every and last is not None and mono - last < job.every:
                    continue
                self._last[job.name] = mono
                thread = threading.Thread(target=self._run, args=(job, now), daemon=True,
                                          name=f"housekeeping-{job.name}")
                self._threads[job.name] = thread
                thread.start()

    def _run(self, job, now: datetime) -> None:
        try:
            job.fn(now, self.scheduler)
        except Exception:
            log.exception("housekeeping %s failed", job.name)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the runs in progress; True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


class Scheduler(huey_consumer.Scheduler):
    def __init__(self, huey, stop_flag, interval, periodic, housekeeping: Housekeeping):
        super().__init__(huey, stop_flag, interval, periodic)
        self.housekeeping = housekeeping

    def loop(self, now=None):
        # `now` is huey's hook for tests (naive UTC); the jobs get an aware UTC time.
        if now is None:
            aware = datetime.now(timezone.utc)
        else:
            aware = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
        if not self.stop_flag.is_set():
            self.housekeeping.tick(aware)
        super().loop(now)


def quiet_task_logs() -> None:
    """huey's per-task INFO lines off (see the module's docstring), once huey set its level."""
    huey_logger = logging.getLogger("huey")
    if huey_logger.level == logging.INFO:
        # a child's own level: its records still reach the handler huey put on "huey"
        logging.getLogger("huey.consumer").setLevel(logging.INFO)
        huey_logger.setLevel(logging.WARNING)


class Consumer(huey_consumer.Consumer):
    def __init__(self, huey, *args, **kwargs):
        quiet_task_logs()
        self.wake_key = wake_key(huey)
        huey.storage.wake_key = self.wake_key
        periodic = kwargs.get("periodic", True)
        self.housekeeping = Housekeeping(getattr(huey, "housekeeping", []), scheduler=periodic)
        super().__init__(huey, *args, **kwargs)

    def run(self):
        from app import outages

        outages.install()  # outages in a few lines, not a traceback per worker per try
        super().run()

    def _create_scheduler(self):
        return Scheduler(huey=self.huey, stop_flag=self.stop_flag,
                         interval=self.scheduler_interval, periodic=self.periodic,
                         housekeeping=self.housekeeping)

    def stop(self, graceful=False):
        started = time.monotonic()
        self.stop_flag.set()
        self._wake_workers()
        super().stop(graceful)
        if graceful:
            bound = self.shutdown_timeout
            left = None if bound is None else max(0.0, bound - (time.monotonic() - started))
            if not self.housekeeping.join(left):
                log.warning("housekeeping still running at the stop bound")
        self._clear_wake()
        log.info("consumer stopped in %.2f s", time.monotonic() - started)

    def _wake_workers(self) -> None:
        conn = self.huey.storage.conn
        try:
            with conn.pipeline(transaction=False) as pipe:
                pipe.lpush(self.wake_key, *([b"stop"] * self.workers))
                pipe.expire(self.wake_key, WAKE_KEY_TTL_SECONDS)
                pipe.execute()
        except Exception:  # Redis away: the reads end at their timeout, as huey's own stop does
            log.exception("could not wake the workers; they stop at their read timeout")

    def _clear_wake(self) -> None:
        try:
            self.huey.storage.conn.delete(self.wake_key)
        except Exception:
            pass
