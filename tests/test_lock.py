"""The cron lock: contention, ownership, expiry, status."""

from __future__ import annotations

import time

from app.lock import CronLock


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


def test_ttl_is_25_minutes(services):
    lock = CronLock(services.redis, services.keys.cron_lock)
    lock.acquire()
    assert 24 * 60 < services.redis.ttl(services.keys.cron_lock) <= 25 * 60


def test_expiry_frees_it_and_the_old_holder_cannot_release_the_new_one(services):
    lock = CronLock(services.redis, services.keys.cron_lock, ttl=0.2)
    old = lock.acquire()
    time.sleep(0.3)
    new = lock.acquire()
    assert new is not None
    assert CronLock.release(old) is False  # not ours any more: left alone
    assert lock.status()["locked"] is True
    assert CronLock.release(new) is True


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
