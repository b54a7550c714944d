"""The cron lock: contention, ownership, expiry, status."""

from __future__ import annotations

import os
import time

from app.schedule.lock import CronLock


def test_only_one_holder_at_a_time(services):
    lock = CronLock(services.redis, services.keys.cron_lock)
    first = lock.acquire()
    assert first is not None
    assert lock.acquire() is None
    status = lock.status()
    assert status["locked"] and status["lock_holder"].endswith(f":{__import__('os').getpid()}")
    assert status["lock_acquired_at"] < status["expires_at"]
    assert CronLock.release(first)
    assert lock.status()["locked"] is False
    assert lock.acquire() is not None


def test_a_short_ttl_that_a_live_run_keeps_extending(services):
    """One minute, extended while the run lives: a dead holder blocks for a minute at most."""
    lock = CronLock(services.redis, services.keys.cron_lock)
    held = lock.acquire()
    assert 50 < services.redis.ttl(services.keys.cron_lock) <= 60
    CronLock.release(held)
    short = CronLock(services.redis, services.keys.cron_lock, ttl=0.3)
    held = short.acquire()
    time.sleep(1.0)  # three TTLs: only the keep-alive explains a lock still held
    assert short.acquire() is None and short.status()["locked"] is True
    assert CronLock.release(held) is True


def test_a_run_that_hangs_gives_the_lock_up_at_its_max_hold(services):
    lock = CronLock(services.redis, services.keys.cron_lock, ttl=0.3, max_hold=0.5)
    hung = lock.acquire()
    time.sleep(1.2)
    new = lock.acquire()
    assert new is not None
    assert CronLock.release(hung) is False  # not ours any more: left alone
    assert CronLock.release(new) is True


def test_expiry_frees_it_and_the_old_holder_cannot_release_the_new_one(services):
    lock = CronLock(services.redis, services.keys.cron_lock, ttl=0.2, max_hold=0.2)
    old = lock.acquire()
    time.sleep(0.4)
    new = lock.acquire()
    assert new is not None
    assert CronLock.release(old) is False  # not ours any more: left alone
    assert lock.status()["locked"] is True
    assert CronLock.release(new) is True


def test_a_dead_holder_on_this_host_is_taken_over_at_once(services):
    """A holder killed with SIGKILL (its token names this host and its pid) blocks nobody."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: the pid names no process now
    token = f"{os.uname().nodename}:{dead.pid}:{int(time.time() * 1000)}:{'0' * 32}"
    services.redis.set(services.keys.cron_lock, token, px=60_000)
    lock = CronLock(services.redis, services.keys.cron_lock)
    held = lock.acquire()
    assert held is not None and lock.status()["lock_holder"].endswith(f":{os.getpid()}")
    CronLock.release(held)
    # A live holder (this process, another run) is never taken over.
    live = lock.acquire()
    assert lock.acquire() is None
    CronLock.release(live)


def test_tokens_are_unique_per_run(services):
    lock = CronLock(services.redis, services.keys.cron_lock)
    a = lock.acquire()
    token_a = services.redis.get(services.keys.cron_lock)
    CronLock.release(a)
    lock.acquire()
    assert services.redis.get(services.keys.cron_lock) != token_a


def test_force_release_for_the_operator(services):
    lock = CronLock(services.redis, services.keys.cron_lock)
    lock.acquire()
    assert lock.force_release() is True
    assert lock.status()["locked"] is False
