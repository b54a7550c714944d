"""The shared circuit breaker, against real Redis, including races between threads."""

from __future__ import annotations

import threading
import time

import pytest

from app.check.breaker import BreakerOpen, BreakerPolicy, CircuitBreaker

FAST = BreakerPolicy(open_seconds=0.3, trial_timeout_seconds=0.5)


@pytest.fixture
def breaker(services):
    return CircuitBreaker(services.redis, services.keys.breaker, FAST)


def open_it(breaker):
    for _ in range(10):
        breaker.allow()
        breaker.record_failure()


def test_ten_consecutive_failures_open_it(breaker):
    for _ in range(9):
        breaker.record_failure()
    breaker.allow()  # still closed after 9
    assert breaker.status()["state"] == "closed"
    breaker.record_failure()
    status = breaker.status()
    assert status["state"] == "open" and status["failure_count"] == 10
    assert status["last_failure"] and status["last_state_change"] and status["opened_at"]
    with pytest.raises(BreakerOpen) as refused:
        breaker.allow()
    assert 0 < refused.value.retry_in <= FAST.open_seconds


def test_a_success_resets_the_consecutive_count(breaker):
    for _ in range(9):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(9):
        breaker.record_failure()
    assert breaker.status()["state"] == "closed"


def test_half_open_after_the_wait_then_three_successes_close_it(breaker):
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    breaker.allow()
    assert breaker.status()["state"] == "half_open"
    breaker.record_success()
    breaker.allow()
    breaker.record_success()
    assert breaker.status()["state"] == "half_open"
    breaker.allow()
    breaker.record_success()
    status = breaker.status()
    assert status["state"] == "closed" and status["failure_count"] == 0


def test_a_half_open_failure_reopens_it(breaker):
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    breaker.allow()
    breaker.record_success()
    breaker.allow()
    breaker.record_failure()
    assert breaker.status()["state"] == "open"
    with pytest.raises(BreakerOpen):
        breaker.allow()


def test_half_open_admits_a_bounded_number_of_trials(breaker):
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    for _ in range(FAST.max_trials):
        breaker.allow()
    with pytest.raises(BreakerOpen):
        breaker.allow()
    breaker.record_success()  # one trial reports back: its permit is free again
    breaker.allow()


def test_trial_permits_of_dead_workers_lapse(breaker):
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    for _ in range(FAST.max_trials):
        breaker.allow()  # and never report: the workers died
    with pytest.raises(BreakerOpen):
        breaker.allow()
    time.sleep(FAST.trial_timeout_seconds + 0.05)
    breaker.allow()


def test_concurrent_failures_are_all_counted(services):
    breaker = CircuitBreaker(services.redis, services.keys.breaker,
                             BreakerPolicy(failure_threshold=1000))
    threads = [threading.Thread(target=lambda: [breaker.record_failure() for _ in range(50)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.status()["failure_count"] == 400  # a read-modify-write would lose some


def test_concurrent_half_open_callers_get_exactly_max_trials(breaker):
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    admitted, refused = [], []
    barrier = threading.Barrier(16)

    def call():
        barrier.wait()
        try:
            breaker.allow()
            admitted.append(1)
        except BreakerOpen:
            refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == FAST.max_trials and len(refused) == 16 - FAST.max_trials


def test_two_hosts_share_one_breaker(services):
    import redis

    other_host = redis.Redis.from_url(services.settings.redis_url)
    a = CircuitBreaker(services.redis, services.keys.breaker)
    b = CircuitBreaker(other_host, services.keys.breaker)
    for _ in range(5):
        a.record_failure()
        b.record_failure()
    assert a.status()["state"] == "open" and b.status()["state"] == "open"
    a.reset()
    b.allow()


def test_only_a_call_whose_success_changes_something_must_report_it(breaker):
    # closed, nothing counted: record_success would change nothing, so the check skips its trip
    assert breaker.allow() is False
    breaker.record_failure()
    assert breaker.allow() is True  # a failure is counted: the success resets it
    breaker.record_success()
    assert breaker.status()["failure_count"] == 0 and breaker.allow() is False
    open_it(breaker)
    time.sleep(FAST.open_seconds + 0.05)
    assert breaker.allow() is True  # half open: every trial's success counts towards closing
