"""The cron lock: one cron run at a time across every scheduler and the HTTP trigger.

redis-py's `Lock` does the work (SET NX PX to take it, a Lua compare-and-delete so only the holder
releases it, a Lua extend). The token is unique per run and also says who holds it and since
when, so the status is one GET and needs no second key that could disagree with the lock.

A holder that dies (SIGKILL, OOM, PM2's kill after its stop timeout) must not block the slot's
rerun for long, so the lock is short-lived and kept alive by the run:

- TTL_SECONDS is one minute; a thread of the run extends it every third of that while the run
  lasts, up to MAX_HOLD_SECONDS (25 minutes: a live run that hangs, say on a stuck query, gives
  the lock up then, as the old 25-minute TTL did). A dead holder's lock lapses within a minute, so
  the next scheduler tick but one (within 2 minutes) gets it.
- A holder on this host whose process is gone is seen to be dead at once: its token names the
  host and pid, and the lock is taken over (compare-and-delete on that token, then SET NX). One
  host name is taken to mean one pid namespace (PM2's processes; containers get names of their
  own); a pid reused meanwhile only means waiting for the TTL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import redis
from redis.exceptions import LockError

from app.settings import hostname
from app.timeutil import iso_from_epoch

log = logging.getLogger(__name__)

TTL_SECONDS = 60
MAX_HOLD_SECONDS = 25 * 60


class HeldLock:
    """A taken lock and the thread that keeps it alive until released (or MAX_HOLD_SECONDS)."""

    def __init__(self, lock: redis.lock.Lock, ttl: float, max_hold: float):
        self.lock = lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, args=(ttl, max_hold),
                                        daemon=True, name="cron-lock-keepalive")
        self._thread.start()

    def _keep_alive(self, ttl: float, max_hold: float) -> None:
        held_until = time.monotonic() + max_hold
        while not self._stop.wait(ttl / 3):
            if time.monotonic() + ttl > held_until:
                log.warning("cron lock held for %.0f s: no longer extended, it lapses", max_hold)
                return
            try:
                self.lock.extend(ttl, replace_ttl=True)
            except (LockError, redis.RedisError) as exc:
                log.warning("cron lock could not be extended (%s); another run may take it", exc)
                return

    def release(self) -> bool:
        self._stop.set()
        self._thread.join()
        try:
            self.lock.release()
            return True
        except LockError:
            return False


class CronLock:
    def __init__(self, client: redis.Redis, key: str, ttl: float = TTL_SECONDS,
                 max_hold: float = MAX_HOLD_SECONDS):
        self.client = client
        self.key = key
        self.ttl = ttl
        self.max_hold = max_hold

    def _lock(self) -> redis.lock.Lock:
        return self.client.lock(self.key, timeout=self.ttl, blocking=False, thread_local=False)

    def acquire(self) -> HeldLock | None:
        """The held lock (kept alive until released), or None when a live run holds it. Never blocks."""
        token = f"{hostname()}:{os.getpid()}:{int(time.time() * 1000)}:{uuid.uuid4().hex}"
        lock = self._lock()
        if not lock.acquire(token=token):
            if not self._take_over_dead_holder() or not lock.acquire(token=token):
                return None
        return HeldLock(lock, self.ttl, self.max_hold)

    def _take_over_dead_holder(self) -> bool:
        """True when the holder was a process of this host that no longer exists (lock dropped)."""
        held = self.client.get(self.key)
        if not held:
            return True  # lapsed meanwhile
        held = held.decode() if isinstance(held, bytes) else held
        host, pid = _holder(held)
        if host != hostname() or pid is None or _alive(pid):
            return False
        try:
            self._lock().do_release(held)  # redis-py's compare-and-delete, on the dead one's token
        except LockError:
            return False  # changed hands meanwhile: a live holder now
        log.warning("cron lock of %s:%d taken over: that process is gone", host, pid)
        return True

    @staticmethod
    def release(lock: HeldLock) -> bool:
        """Release if still ours; False when it lapsed and maybe passed to another run."""
        return lock.release()

    def status(self) -> dict:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.key)
            pipe.pttl(self.key)
            token, pttl = pipe.execute()
        if not token:
            return {"locked": False, "lock_holder": None, "lock_acquired_at": None, "expires_at": None}
        token = token.decode() if isinstance(token, bytes) else token
        holder, acquired_ms = _parse(token)
        expires = time.time() + pttl / 1000 if pttl and pttl > 0 else None
        return {
            "locked": True,
            "lock_holder": holder,
            "lock_acquired_at": iso_from_epoch(acquired_ms / 1000) if acquired_ms else None,
            "expires_at": iso_from_epoch(expires),
        }

    def force_release(self) -> bool:
        """Operator's escape hatch (CLI): drop the lock whoever holds it."""
        return bool(self.client.delete(self.key))


def _parse(token: str) -> tuple[str, int | None]:
    parts = token.split(":")
    if len(parts) == 4 and parts[2].isdigit():
        return f"{parts[0]}:{parts[1]}", int(parts[2])
    return "unknown", None


def _holder(token: str) -> tuple[str | None, int | None]:
    parts = token.split(":")
    if len(parts) == 4 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
