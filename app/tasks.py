"""Huey tasks: thin wrappers that hand the work to app.schedule.cron, app.check.run and app.mail.delivery.

Run the consumer on `app.tasks.huey` (see app.queue.worker for the flags).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Iterable

from huey.exceptions import RetryTask
from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR, SIGNAL_INTERRUPTED, SIGNAL_RETRYING

from app import workstats
from app.alerting import ping
from app.check import run as check  # its check_section, not this module's task of that name
from app.check.breaker import BreakerOpen
from app.mail import delivery
from app.queue.heartbeat import INTERVAL_SECONDS, Heartbeat
from app.queue import taskcodec
from app.queue.instance import huey
from app.schedule import capacity, catchup, cron, sentinel, slots
from app.services import get_services
from app.settings import hostname

log = logging.getLogger(__name__)

CHECK_RETRIES = 3
SWEEP_INTERVAL_SECONDS = 300


@huey.task(retries=CHECK_RETRIES, retry_delay=30, retry_backoff=2)
def check_section(term: str, class_nbr: str, enqueued_at: float | None = None,
                  slot: str | None = None) -> None:
    services = get_services()
    _released.section = None  # nothing freed yet by this run (see _slot_outcome)
    started = time.monotonic()
    try:
        # the running marker goes in the breaker's round trip, before it (one round trip, not two)
        result = check.check_section(services, term, class_nbr,
                                     lambda pipe: services.pending.running(term, class_nbr, pipe))
    except BreakerOpen as exc:
        workstats.stats.check("skipped")
        _alert_nudge()
        delay = max(5.0, exc.retry_in)
        if superseded(slot, enqueued_at, time.time() + delay):
            # The retry would come after the section's next slot, which queues it afresh: drop
            # this copy now (and free its marker before that run) rather than check it twice, late.
            log.warning("check %s/%s of slot %s superseded: breaker still %s, its next slot "
                        "covers it", term, class_nbr, slot or "-", exc.state)
            _slot_outcome(slot, release=(term, class_nbr), failed=1, superseded=1)
            return
        # Not a failure of the check: retry when the breaker may admit calls, without using a retry.
        raise RetryTask(str(exc), delay=delay) from None
    except Exception:
        workstats.stats.check("failed", time.monotonic() - started)
        _alert_nudge()  # the breaker may be opening: alerts look now (app.alerting.alerts)
        raise
    workstats.stats.check("done", time.monotonic() - started)
    workstats.stats.emails(result.delivered, max(0, result.claimed - result.delivered))
    if result.claimed > result.delivered:
        _alert_nudge()  # an email refused or not sent: the deliveries check may say so
    _slot_outcome(slot, release=(term, class_nbr), checked=1, changed=int(bool(result.changes)),
                  emailed=result.delivered)


def superseded(slot: str | None, enqueued_at: float | None, attempt_at: float) -> bool:
    """Whether an attempt at `attempt_at` comes on or after the copy's section's next slot (an
    hour after its own slot's start; for a check queued by hand, an hour after it was queued)."""
    start = slots.start_of(slot) if slot else None
    base = start.timestamp() if start else enqueued_at
    return base is not None and attempt_at >= base + slots.SLOT_PERIOD.total_seconds()


# The section whose pending marker this worker thread freed with its slot's figures, as its check
# ended for good: the completion signal then frees nothing more (one round trip, not two).
_released = threading.local()


def _slot_outcome(slot: str | None, release: tuple[str, str] | None = None, **outcome: int) -> None:
    """The check's part of its slot's figures (app.schedule.capacity); checks enqueued by hand have
    none. `release`: the check ended for good, its section's marker is freed in the same round
    trip (else, or without a slot, by the completion signal)."""
    if slot:
        services = get_services()
        first = None if release is None else (lambda pipe: services.pending.release(*release, pipe))
        figures = capacity.record(services.redis, services.keys, slot, first=first, **outcome)
        _released.section = release
        if figures:  # this check closed its slot: the dead man's switch (app.alerting.ping)
            ping.slot_finished(services.settings, figures)


def enqueue_checks(sections: Iterable[tuple[str, str]], slot: str | None = None) -> int:
    """Enqueue one check per section not already waiting or running; returns how many.

    Markers and payloads go to Redis together, one script call per 1,000 sections (app.schedule.pending):
    the marker is set exactly when its check reaches the queue, so a run killed at any point
    never leaves a section marked but not queued.
    """
    services = get_services()
    sections = list(dict.fromkeys(sections))
    now = time.time()
    payloads = check_payloads(sections, now, slot)
    stats = None
    if slot:  # counted in the same script, before the LPUSH (app.schedule.capacity)
        stats = (services.keys.slot_stats(slot), slot.rsplit(":", 1)[-1], capacity.STATS_TTL_SECONDS)
    queued = services.pending.enqueue(sections, payloads, huey.storage.queue_key, now, stats)
    return len(queued)


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
    services = get_services()
    try:
        result = cron.run_cron(services, enqueue_checks, group=group, force=force, now=now)
    except cron.CronLocked:
        raise  # another run is going: not a failure
    except Exception as exc:
        ping.cron_failed(services.settings)
        _alert_nudge(lived="cron_run", reason=f"cron run failed: {type(exc).__name__}")
        raise
    ping.cron_done(services.settings, result)
    if _alerts is not None and _alerts.lived("cron_run"):
        _alert_nudge(lived="cron_run", reason=None)  # the failure recorded here is over
    return result


# --- housekeeping: rides on the consumer's scheduler tick (app.queue.consumer), never on the queue ----

def _redis_lost() -> bool:
    return sentinel.for_process(get_services()).lost()


_slots = catchup.SlotRunner(lambda group, now: run_cron_now(group, now=now), lost=_redis_lost)


@huey.on_tick(scheduler_only=True)
def cron_slots(now, scheduler: bool) -> None:
    """Each group's latest slot once, caught up late if a restart, kill or lost Redis missed it
    (app.schedule.catchup)."""
    _slots.tick(now)


@huey.on_tick(every=SWEEP_INTERVAL_SECONDS, scheduler_only=True)
def sweep_undelivered(now, scheduler: bool) -> None:
    swept = delivery.sweep(get_services())
    if swept and swept.get("batches"):  # batches left open past their send: something failed
        _alert_nudge()


_alerts = None
_alerts_lock = threading.Lock()


def _alerting():
    """This process's alert evaluator (None without alert settings: nothing loaded or asked)."""
    global _alerts
    services = get_services()
    if not services.settings.alerting:
        return None
    with _alerts_lock:
        if _alerts is None:
            from app.alerting.alerts import Alerts

            _alerts = Alerts(services)
    return _alerts


def _alert_nudge(lived: str | None = None, reason: str | None = None) -> None:
    """A failure here: the alerts look now, not at their next poll (no Redis command itself)."""
    try:
        evaluator = _alerting()
        if evaluator is not None:
            evaluator.nudge(lived, reason)
    except Exception:  # telling must never break the work that failed
        log.warning("could not start the alert follow-up", exc_info=True)


@huey.on_tick(scheduler_only=True)
def alerts(now, scheduler: bool) -> None:
    """Health's failing checks told to the operator (app.alerting.alerts decides when: at most each tick,
    far less while all is healthy). Nothing is loaded or asked without alert settings."""
    evaluator = _alerting()
    if evaluator is not None:
        evaluator.tick()


@huey.on_tick()
def work_stats(now, scheduler: bool) -> None:
    """This process's counters into Redis for /api/metrics (app.workstats): no command when idle."""
    services = get_services()
    workstats.stats.flush(services.redis, services.keys.work_stats, hostname())


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
        released, _released.section = getattr(_released, "section", None), None
        if signal != SIGNAL_COMPLETE or released != (task.args[0], task.args[1]):
            get_services().pending.release(task.args[0], task.args[1])
        if signal == SIGNAL_INTERRUPTED:
            _slot_outcome(_slot_of(task), failed=1)


@huey.signal(SIGNAL_RETRYING)
def _check_retrying(signal, task, *args) -> None:
    if _is_check(task):  # waits in the schedule: its marker lives on as a queued copy's
        enqueued_at = task.args[2] if len(task.args) > 2 and task.args[2] else time.time()
        get_services().pending.waiting(task.args[0], task.args[1], enqueued_at)


def _check_dropped(data: bytes) -> None:
    """A check read off the queue but dropped unrun (signed with a rotated key, a task this release
    does not know): its section's marker would otherwise block the section until it lapsed. Freed
    now, so its group's next slot queues it again, and counted as failed for its slot. The bytes
    are not trusted: at worst a forged job frees a marker, and its section is checked once more."""
    found = taskcodec.unverified_call(data)
    if found is None or found[0].rsplit(".", 1)[-1] != "check_section":
        return
    args = found[1]
    if len(args) < 2 or not all(isinstance(a, str) and a.isdigit() and len(a) <= 8 for a in args[:2]):
        return
    get_services().pending.release(args[0], args[1])
    slot = args[3] if len(args) > 3 and isinstance(args[3], str) else None
    if slot and slots.start_of(slot) is not None:
        _slot_outcome(slot, failed=1)
    log.warning("dropped check %s/%s: its section is free for its next slot", args[0], args[1])


huey.on_drop.append(_check_dropped)


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
    _alert_nudge()
    log.error("check %s/%s dead-lettered after %d attempts: %s", term, class_nbr,
              CHECK_RETRIES + 1, exc)
