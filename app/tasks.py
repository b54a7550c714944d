"""Huey tasks: thin wrappers that hand the work to app.cron, app.check and app.delivery.

Run the consumer on `app.tasks.huey` (see app.worker for the flags).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Iterable

from huey.exceptions import RetryTask
from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR, SIGNAL_INTERRUPTED

from app import capacity, catchup, check, cron, delivery
from app.breaker import BreakerOpen
from app.heartbeat import INTERVAL_SECONDS, Heartbeat
from app.queue import huey
from app.services import get_services

log = logging.getLogger(__name__)

CHECK_RETRIES = 3
# A check the breaker keeps refusing is dropped after this long: by then the section's next
# hourly run has enqueued it again, so nothing is lost and the queue does not pile up.
SUPERSEDED_AFTER_SECONDS = 50 * 60
ENQUEUE_CHUNK = 1000
SWEEP_INTERVAL_SECONDS = 300


@huey.task(retries=CHECK_RETRIES, retry_delay=30, retry_backoff=2)
def check_section(term: str, class_nbr: str, enqueued_at: float | None = None,
                  slot: str | None = None) -> None:
    services = get_services()
    try:
        result = check.check_section(services, term, class_nbr)
    except BreakerOpen as exc:
        waited = 0.0 if enqueued_at is None else time.time() - enqueued_at
        if waited > SUPERSEDED_AFTER_SECONDS:
            log.warning("check %s/%s dropped: breaker still %s, the next run covers it",
                        term, class_nbr, exc.state)
            services.pending.release(term, class_nbr)
            _slot_outcome(slot, failed=1)
            return
        # Not a failure of the check: retry when the breaker may admit calls, without using a retry.
        raise RetryTask(str(exc), delay=max(5.0, exc.retry_in)) from None
    _slot_outcome(slot, checked=1, changed=int(bool(result.changes)), emailed=result.delivered)


def _slot_outcome(slot: str | None, **outcome: int) -> None:
    """The check's part of its slot's figures (app.capacity); checks enqueued by hand have none."""
    if slot:
        services = get_services()
        capacity.record(services.redis, services.keys, slot, **outcome)


def enqueue_checks(sections: Iterable[tuple[str, str]], slot: str | None = None) -> int:
    """Enqueue one check per section not already waiting or running; returns how many.

    Serialized tasks go onto huey's list in one LPUSH per 1,000 (measured in bench/enqueue.py:
    one command instead of one round trip each).
    """
    services = get_services()
    fresh = services.pending.claim(sections)
    now = time.time()
    payloads = check_payloads(fresh, now, slot)
    if slot:  # before the LPUSH: no check of the slot can finish before its count is known
        capacity.open_slot(services.redis, services.keys, slot, slot.rsplit(":", 1)[-1],
                           len(payloads), now)
    storage = huey.storage
    for start in range(0, len(payloads), ENQUEUE_CHUNK):
        try:
            storage.conn.lpush(storage.queue_key, *payloads[start:start + ENQUEUE_CHUNK])
        except Exception:
            # Nothing from here on reached the queue: give those sections back, or a retried run
            # would skip them as "already waiting" until their markers lapse (50 minutes).
            services.pending.release_many(fresh[start:])
            raise
    return len(payloads)


def check_payloads(sections: list[tuple[str, str]], enqueued_at: float,
                   slot: str | None = None) -> list[bytes]:
    """The queue messages of check_section(term, class_nbr, enqueued_at, slot), one per section.

    What huey.serialize_task(check_section.s(...)) gives for each, but huey builds the message
    once: each check is that message with its own task id and arguments (a cron run of 10,000
    spent a third of its serializing on building huey Task objects, issue 20).
    """
    serializer = huey.serializer
    template = serializer.deserialize(huey.serialize_task(check_section.s("", "", enqueued_at, slot)))
    return [serializer.serialize(template._replace(id=str(uuid.uuid4()),
                                                   args=(term, nbr, enqueued_at, slot)))
            for term, nbr in sections]


def run_cron_now(group: str | None = None, force: bool = False, now=None) -> dict:
    return cron.run_cron(get_services(), enqueue_checks, group=group, force=force, now=now)


# --- housekeeping: rides on the consumer's scheduler tick (app.consumer), never on the queue ----

_slots = catchup.SlotRunner(lambda group, now: run_cron_now(group, now=now))


@huey.on_tick(scheduler_only=True)
def cron_slots(now, scheduler: bool) -> None:
    """Each due slot of the hour once, caught up late if a restart spanned it (app.catchup)."""
    _slots.tick(now)


@huey.on_tick(every=SWEEP_INTERVAL_SECONDS, scheduler_only=True)
def sweep_undelivered(now, scheduler: bool) -> None:
    delivery.sweep(get_services())


@huey.on_tick(every=INTERVAL_SECONDS)
def heartbeat(now, scheduler: bool) -> None:
    """On every host (a `-n` host too), at start and every INTERVAL_SECONDS: one HSET."""
    services = get_services()
    Heartbeat(services.redis, services.keys, release=services.settings.release,
              scheduler=scheduler).beat()


# --- bookkeeping of checks that finish, for good or not -------------------------------------------

def _is_check(task) -> bool:
    return isinstance(task, check_section.task_class)


@huey.signal(SIGNAL_COMPLETE, SIGNAL_INTERRUPTED)
def _check_finished(signal, task, *args) -> None:
    if _is_check(task):
        get_services().pending.release(task.args[0], task.args[1])
        if signal == SIGNAL_INTERRUPTED:
            _slot_outcome(_slot_of(task), failed=1)


def _slot_of(task) -> str | None:
    return task.args[3] if len(task.args) > 3 else None


@huey.signal(SIGNAL_ERROR)
def _check_failed(signal, task, exc=None) -> None:
    if not _is_check(task) or task.retries:
        return  # huey retries it
    term, class_nbr = task.args[0], task.args[1]
    services = get_services()
    services.dead_letters.add(term, class_nbr, reason=str(exc) or type(exc).__name__,
                              attempts=CHECK_RETRIES + 1)
    services.pending.release(term, class_nbr)
    _slot_outcome(_slot_of(task), failed=1)
    log.error("check %s/%s dead-lettered after %d attempts: %s", term, class_nbr,
              CHECK_RETRIES + 1, exc)
