"""The Huey instance over Redis. It imports no tasks (app.tasks registers them).

Tuned for a small VPS and for managed Redis plans that count commands: results are off (the
results hash would otherwise grow forever), workers block on the queue for HUEY_READ_TIMEOUT_SECONDS
instead of polling, and the connection pool's socket timeout sits above that read (redis-py 8
defaults to 5 s, which would drop and re-open each worker's connection every 5 s).

Two extensions of huey, both through hooks it offers (`storage_class`, `create_consumer`):

- WakeableRedisStorage: a worker's blocking read also listens on its consumer's own wake-up list,
  so a graceful stop can end idle reads at once instead of waiting out the read timeout. That is
  what lets the read be long (few Redis commands) and the stop short (issue 12) at the same time.
  Its schedule read asks one cheap question before huey's three-command pop.
- TaskSerializer (app.queue.taskcodec): tasks are signed JSON, not huey's default pickle, so nothing read
  from Redis can run code; SeatwatchHuey.deserialize_task drops and logs whatever does not verify
  (a crafted pickle, a forged or tampered task, a task of an earlier release) and the worker reads
  on (issue 18).
- A lease for every task taken off the queue (issue 26; BullMQ's active list, in huey's own
  schedule): a task taken off the queue is also in huey's schedule, due LEASE_SECONDS later, until
  the task ended however it ended (done, failed, retried, dropped). A worker that dies (SIGKILL,
  OOM, a host lost) leaves its lease there, and the scheduler's ordinary schedule read puts the
  task back on the queue when it is due: the check runs again within LEASE_SECONDS plus a tick,
  and never while its first worker is alive (no check comes near the lease: every outbound call
  has a deadline, app.httpdeadline).
- One round trip per task while busy (issue 30; BullMQ's move-to-active): a worker that just
  finished a task takes the next one with one script (TAKE_LUA) that ends the finished task's
  lease (ZREM), pops the next (RPOP) and leases it (ZADD), atomically on the server, so no kill
  can fall between the pop and the lease. Only when the queue is empty does the worker block
  (BRPOP on the queue and its wake-up key, then the ZADD of the lease: two round trips for the
  first task after an idle read, and for that one a kill in the instant between them is not
  covered; its section is freed by the stale-marker rule of app.schedule.pending at its group's
  next slot). An idle worker's reads are what they were: one BRPOP per read timeout, no script.
  A worker that stops ends its last lease in its shutdown (huey's on_shutdown hook, run in the
  worker's thread); outside a consumer's worker threads each lease ends as its task ends.
  By INFO commandstats a busy task is 4 commands (EVALSHA and the three inside), none on an idle
  day: the schedule is read each tick anyway.
- SeatwatchHuey.housekeeping: jobs (heartbeat, cron slots, delivery sweep) that ride on the
  scheduler's tick in threads of their own instead of being queued tasks: they never wait behind
  a backlog of checks and cost no queue round trips (app.queue.consumer runs them).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import redis
from huey import RedisHuey
from huey.exceptions import HueyException
from huey.storage import RedisStorage
from redis import ConnectionPool

from app.queue.taskcodec import TaskSerializer, UnverifiedTask, signing_key
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

# BullMQ's move-to-active, for huey's queue: KEYS queue, schedule; ARGV the lease's due time (a
# schedule score) and, optionally, the finished task whose lease ends. RPOP and ZADD in one step
# on the server, so no kill between them can leave a task popped but unleased.
TAKE_LUA = """
if ARGV[2] then redis.call('ZREM', KEYS[2], ARGV[2]) end
local data = redis.call('RPOP', KEYS[1])
if data then redis.call('ZADD', KEYS[2], ARGV[1], data) end
return data
"""


class WakeableRedisStorage(RedisStorage):
    """RedisStorage whose blocking read also pops `wake_key` (set by the consumer, one per process),
    each worker thread reading on a connection of its own.

    BRPOP serves the keys in order, so a waiting task always wins over a wake-up token; a token
    only ends the read (dequeue returns None, the worker loop sees the stop flag and exits).

    The reader's own connection: a worker thread spends its life in BRPOP, so it holds a
    connection anyway; keeping the one it has (redis-py's `single_connection_client`, from the
    same pool) instead of taking it from the pool and giving it back around every read saves
    ~20 us of CPU a task of the ~70 us redis-py 8 spends on a BRPOP (bench: a 20,000-read loop,
    issue 20), under a GIL the four workers share. A connection dropped between reads is
    replaced at the next read, as the pool would have replaced it.
    """

    wake_key: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._readers = threading.local()
        self._take_sha = hashlib.sha1(TAKE_LUA.encode()).hexdigest()  # loaded on first NOSCRIPT

    def _reader(self) -> redis.Redis:
        client = getattr(self._readers, "client", None)
        if client is None:
            client = self._readers.client = redis.Redis(connection_pool=self.pool,
                                                        single_connection_client=True)
        return client

    def dequeue(self):
        if not (self.blocking and self.wake_key):
            return super().dequeue()
        reader, keys = self._reader(), [self.queue_key, self.wake_key]
        try:
            try:
                popped = reader.brpop(keys, timeout=self.read_timeout)
            except redis.ConnectionError:
                # dropped since the last read (a Redis restart, an idle timeout; the pool would
                # have noticed when lending it): once more, on a new connection. Redis really
                # away raises again, for huey's loop to log and back off as before.
                popped = reader.brpop(keys, timeout=self.read_timeout)
        except TimeoutError:
            return None
        if popped is None:
            return None
        key, data = popped
        if isinstance(key, bytes):
            key = key.decode()
        return data if key == self.queue_key else None

    def take(self, due: float, settle: bytes | None = None):
        """One round trip, atomic on the server: end the lease of `settle` (the task this worker
        just finished), pop the next task and lease it until `due` (app.queue.instance). The
        task's bytes, or None when the queue is empty (then nothing was popped or leased)."""
        args = [due] if settle is None else [due, settle]
        reader = self._reader()
        try:
            try:
                return reader.evalsha(self._take_sha, 2, self.queue_key, self.schedule_key, *args)
            except redis.ConnectionError:
                # dropped since the last read, as in dequeue: once more, on a new connection (had
                # the script run before the drop, the task it took is leased and runs again when
                # the lease is due: never lost). Redis really away raises again, for huey's loop.
                return reader.evalsha(self._take_sha, 2, self.queue_key, self.schedule_key, *args)
        except redis.exceptions.NoScriptError:
            # a Redis restarted (or flushed its scripts) since this process loaded it
            self._take_sha = reader.script_load(TAKE_LUA)
            return reader.evalsha(self._take_sha, 2, self.queue_key, self.schedule_key, *args)

    def read_schedule(self, ts):
        # huey pops due tasks with a Lua script: three commands by INFO commandstats (EVALSHA and
        # the two inside it) on every scheduler tick, though the schedule (retries waiting for
        # their time) has nothing due on almost every tick. One ZRANGEBYSCORE ... LIMIT 0 1 asks
        # first; the atomic pop runs only when something is due (issue 12's command budget).
        due = self.conn.zrangebyscore(self.schedule_key, "-inf", self.convert_ts(ts), start=0, num=1)
        return super().read_schedule(ts) if due else []


@dataclass(frozen=True)
class HousekeepingJob:
    name: str
    fn: Callable  # fn(now: aware UTC datetime, scheduler: bool) -> None
    every: float  # seconds between runs; 0: every scheduler tick
    scheduler_only: bool  # only on the host that runs the periodic scheduler (not on `-n` hosts)


# Far above a check's length (the scraper timeout plus about 2 minutes per batch of 100 emails in a
# Resend outage, every call bounded: app.httpdeadline), so a live worker keeps its lease; a dead
# one's task runs again within 14 minutes (the lease and the scheduler's 60 s tick). A check of a
# section with more than 5 batches (500 watchers) during a Resend outage could outlast it and run
# twice: harmless for email (claims and batch leases are in PostgreSQL), a second scrape at most.
LEASE_SECONDS = 780


class SeatwatchHuey(RedisHuey):
    storage_class = WakeableRedisStorage

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.housekeeping: list[HousekeepingJob] = []
        self._dropped = itertools.count(1)
        # per worker thread: the bytes of the task it runs (`data`) and of the finished one whose
        # lease its next read ends (`settle`), whether its last read found a task (`busy`)
        self._held = threading.local()
        # called with the raw bytes of a job dropped unrun (app.tasks frees its section's marker)
        self.on_drop: list[Callable[[bytes], None]] = []
        # In a consumer's worker thread (huey runs these hooks there, and only there), a finished
        # task keeps its lease until the thread's next read ends it in the same round trip as
        # the pop, or its shutdown when there is no next read. Anywhere else (a huey used alone,
        # in a test or a command) each lease ends as its task ends.
        self.on_startup("seatwatch_lease")(self._settle_on_next_read)
        self.on_shutdown("seatwatch_lease")(self.settle_held)

    def _settle_on_next_read(self) -> None:
        self._held.defer = True

    def dequeue(self):
        held = self._held
        settle = getattr(held, "settle", None)
        leased = False
        if settle is not None or getattr(held, "busy", False):
            # busy: pop and lease the next task (and end the last one's lease) in one round trip;
            # on an error the last lease stays held for the next try (huey's loop backs off)
            data = self.storage.take(self._lease_due(), settle)
            held.settle, leased = None, data is not None
        else:
            data = None
        if data is None:  # the queue is empty: wait for a task (or a wake-up) in a blocking read
            held.busy = False
            data = self.storage.dequeue()
            if data is None:
                return None
        held.busy = True  # the next read tries the queue at once (no blocking read when busy)
        if not leased:
            self._lease(data)
        task = self.deserialize_task(data)
        if task is None:  # dropped unrun: nothing will end it, so end its lease and marker now
            self._settle(data)
            for hook in self.on_drop:
                try:
                    hook(data)
                except Exception:
                    log.exception("could not clean up after a dropped job")
            return None
        held.data = data
        return task

    def execute(self, task, timestamp=None):
        data, self._held.data = getattr(self._held, "data", None), None
        try:
            return super().execute(task, timestamp)
        finally:
            if data is not None:
                if getattr(self._held, "defer", False):
                    self._held.settle = data
                else:
                    self._settle(data)

    def settle_held(self) -> None:
        """End the lease a worker thread still holds for its last task (its shutdown: no next
        read will end it)."""
        data, self._held.settle = getattr(self._held, "settle", None), None
        if data is not None:
            self._settle(data)

    def _lease_due(self) -> float:
        # on huey's own schedule clock (its timestamps and their conversion), as its reads compare
        return self.storage.convert_ts(self._get_timestamp() + timedelta(seconds=LEASE_SECONDS))

    def _lease(self, data: bytes) -> None:
        try:
            self.storage.conn.zadd(self.storage.schedule_key, {data: self._lease_due()})
        except redis.RedisError:
            # the task is in hand: run it unleased rather than lose it (its section's marker is
            # freed at its next slot should this worker die as well)
            log.warning("could not lease a task taken off the queue; running it without a lease")

    def _settle(self, data: bytes) -> None:
        try:
            self.storage.conn.zrem(self.storage.schedule_key, data)
        except redis.RedisError:
            # Redis away: the lease stays and the task runs once more when it is due (a check is
            # safe to repeat: exactly-once email is kept in PostgreSQL)
            log.warning("could not end a task's lease; it will run once more in %d s", LEASE_SECONDS)

    def deserialize_task(self, data):
        """The task, or None for bytes that are not a task this service signed (or name a task
        this release does not have): those are logged and dropped, never run. A worker that gets
        None reads on; the scheduler skips it (`_deserialize_all`)."""
        try:
            return super().deserialize_task(data)
        except (UnverifiedTask, HueyException) as exc:
            # Only the reason, the size and a few escaped bytes: the job itself is the attacker's.
            start = data[:24] if isinstance(data, (bytes, str)) else type(data).__name__
            log.warning("dropped a job read from Redis without running it: %s (%d bytes, starting "
                        "%r); %d dropped by this process", exc, len(data or b""), start,
                        next(self._dropped))
            return None

    def _deserialize_all(self, messages):
        # huey's one path for the schedule (retries waiting for their time), pending() and
        # scheduled(): a dropped job is left out instead of handed on as None.
        return [task for task in map(self.deserialize_task, messages) if task is not None]

    def on_tick(self, every: float = 0, scheduler_only: bool = False):
        """Register a housekeeping job run by the consumer's scheduler (see app.queue.consumer)."""
        def register(fn: Callable) -> Callable:
            self.housekeeping.append(HousekeepingJob(fn.__name__, fn, every, scheduler_only))
            return fn
        return register

    # Revocation, switched off. Nothing here revokes a task, yet huey asks Redis about it twice
    # per task: HMGET of the revoke flags before running it and HDEL of its flag after, two of
    # the three round trips a task costs (bench/throughput.py, queue overhead). A check that must
    # not run is dropped by its own logic instead (superseded, pending markers).
    REVOKE_PREFIX = "r:"

    def is_revoked(self, task, timestamp=None, peek=True) -> bool:
        return False

    def delete(self, key):
        if isinstance(key, str) and key.startswith(self.REVOKE_PREFIX):
            return False  # a revoke flag, which this service never sets
        return super().delete(key)

    def revoke(self, *args, **kwargs):
        raise NotImplementedError("revocation is off in this service (app.queue.instance.SeatwatchHuey)")

    revoke_all = revoke_by_id = revoke

    def create_consumer(self, **options):
        from app.queue.consumer import Consumer  # imports no tasks either

        return Consumer(self, **options)


def make_huey(settings: Settings) -> SeatwatchHuey:
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=settings.huey_read_timeout + 10,
        socket_connect_timeout=10,
    )
    return SeatwatchHuey(
        name=settings.name,
        connection_pool=pool,
        results=False,
        store_none=False,
        utc=True,
        blocking=True,
        read_timeout=settings.huey_read_timeout,
        serializer=TaskSerializer(signing_key(settings.unsubscribe_secret)),
    )


huey = make_huey(get_settings())
