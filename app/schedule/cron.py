"""One cron run: cron lock, the group's sections, one queued check per section, the slot marker."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Callable, Iterable

from app import db
from app.db import checkers, watches
from app.schedule import handover
from app.schedule.slots import latest_slot
from app.settings import hostname
from app.timeutil import iso

log = logging.getLogger(__name__)

GROUPS = ("even", "odd")
AUTO_HANDOVER_NOTE = "taken over at a slot run: nothing else had checked sections for an hour"
# The scheduler ticks once a minute: a run up to this long after its slot's start is on time.
LATE_AFTER_SECONDS = 90
# Each group runs hourly: one missed run plus ten minutes of slack.
OVERDUE_SECONDS = 70 * 60


class CronLocked(Exception):
    """Another cron run holds the lock."""

    def __init__(self, status: dict):
        super().__init__(f"another cron run holds the lock ({status.get('lock_holder')})")
        self.status = status


def group_for(now: datetime) -> str:
    """Minute < 30 runs the even class numbers, the rest the odd ones."""
    return "even" if now.minute < 30 else "odd"


def run_cron(services, enqueue: Callable[..., int], *,
             group: str | None = None, now: datetime | None = None, force: bool = False) -> dict:
    """Enqueue the checks of a group's latest slot; the result /api/cron and the CLI print.

    The slot is the group's latest one that has started (app.schedule.slots.latest_slot): a manual run
    never takes a slot still ahead (`--group odd` at 14:10 is the 13:30 slot, run only if it has
    not run). Under the cron lock: skip if the slot's marker says it ran, else list the group's
    sections, enqueue them, and only then mark the slot as run. A run killed anywhere before the
    marker leaves none, and the next tick runs the slot again (the checks it did queue are still
    pending, so none goes twice).

    `force` ignores the marker (an operator's deliberate extra run), never the lock.
    `enqueue(sections, slot=...)` tags each check with its slot, for the slot's figures
    (app.schedule.capacity). A run more than LATE_AFTER_SECONDS after its slot's start (a catch-up after
    a restart, a retry after a held lock) says so: `late_seconds` in the result, the log line
    and the last-run record the health check shows.
    """
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    group = group or group_for(now)
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}")

    def result(enqueued: int, **extra) -> dict:
        out = {"success": True, "sections_enqueued": enqueued, "stagger_group": group,
               "duration": round((time.monotonic() - started) * 1000)}
        out.update(extra)
        return out

    slot, start = latest_slot(now, group)
    late_seconds = max(0, round((now - start).total_seconds()))
    late = late_seconds > LATE_AFTER_SECONDS
    if not force and services.slots.ran(slot):  # the common case, without taking the lock
        log.info("cron %s: slot %s already ran, skipping", group, slot)
        return result(0, message="Already ran for this slot", skipped=True, slot=slot)

    lock = services.cron_lock.acquire()
    if lock is None:
        raise CronLocked(services.cron_lock.status())
    try:
        if not force and services.slots.ran(slot):  # a run that finished while we looked
            return result(0, message="Already ran for this slot", skipped=True, slot=slot)
        with db.transaction(services.pool) as conn:
            if force:
                sections, checked = watches.sections_to_check(conn, group), 0
            else:
                record = checkers.read_handover(conn)
                obs = checkers.observe(conn, checkers.outside_since(record), services.settings.checker)
                verdict = handover.decide(record, obs, services.settings.scheduler)
                if not verdict.runs_here:
                    return _waiting(services, group, slot, now, verdict, result)
                if record is None:  # nothing else checks: this service takes the schedule, on record, so
                    # that an old cron coming back later is a second scheduler (degraded), not a reason to wait
                    checkers.write_handover(conn, "vps", hostname(), AUTO_HANDOVER_NOTE)
                sections, checked = checkers.sections_unchecked(conn, group, *handover.slot_window(start))
        enqueued = enqueue(sections, slot=slot)
        extra = {}
        if checked:
            extra["sections_checked_elsewhere"] = checked
        if not sections:
            extra["message"] = ("No sections to check" if not checked else
                                "Every section was already checked in this slot (by another run or system)")
        elif enqueued == 0:
            extra["message"] = "Every section is already waiting or running"
        if late:
            extra["late_seconds"] = late_seconds
        found = len(sections) + checked
        out = result(enqueued, sections_found=found, slot=slot, **extra)
        record = json.dumps(
            {"at": now.isoformat(timespec="seconds"), "slot": slot, "sections_enqueued": enqueued,
             "sections_found": found, "sections_checked_elsewhere": checked,
             "duration_ms": out["duration"], "late_seconds": late_seconds if late else 0})
        with services.redis.pipeline(transaction=False) as pipe:  # one round trip, 2 commands
            services.slots.mark_ran(slot, f"{hostname()}:{time.time():.0f}", pipe)
            pipe.set(services.keys.last_cron(group), record)
            pipe.execute()
    finally:
        services.cron_lock.release(lock)
    log.info("cron run %s: found=%d enqueued=%d duration_ms=%d%s%s", slot, found, enqueued, out["duration"],
             f" checked_elsewhere={checked}" if checked else "", f" ran late by {late_seconds} s" if late else "")
    return out


_waiting_logged: set[str] = set()  # the slots whose wait this process logged (one line a slot)


def _waiting(services, group: str, slot: str, now: datetime, verdict, result) -> dict:
    """The slot is not run here (waiting for the hand-over, handed back): nothing queued, no marker,
    so the tick asks again and the slot runs as soon as the hand-over is recorded. The group's
    record says so (health's overdue check sees a scheduler that waits on purpose, not a dead one)."""
    services.redis.set(services.keys.last_cron(group), json.dumps(
        {"at": now.isoformat(timespec="seconds"), "slot": slot, "sections_enqueued": 0,
         "waiting": verdict.state, "duration_ms": 0, "late_seconds": 0}))
    if slot not in _waiting_logged:
        _waiting_logged.add(slot)
        log.info("cron %s: slot %s not run here: %s", group, slot, verdict.note)
    return result(0, waiting=verdict.state, message=verdict.note, slot=slot)


def last_runs(services) -> dict:
    """The last run of each group, for the health check."""
    raw = services.redis.mget([services.keys.last_cron(g) for g in GROUPS])
    return {g: (json.loads(v) if v else None) for g, v in zip(GROUPS, raw)}


def overdue(runs: dict, scheduler: dict, now: float) -> dict:
    """Each group's last run as the health check shows it, with `reason` when one is overdue:
    its record is older than OVERDUE_SECONDS, or it is missing while a live scheduler has been up
    longer than that (the record expired, was never written, or Redis lost it). `scheduler` is
    app.queue.heartbeat.scheduler_status(); a missing record with no live scheduler is the scheduler
    check's to report."""
    out: dict = {}
    late = []
    up = scheduler.get("up_seconds") if scheduler.get("alive") else None
    for group in GROUPS:
        run = runs.get(group)
        if run is None:
            out[group] = None
            if up is not None and up > OVERDUE_SECONDS:
                late.append(f"{group} (no record of a run, scheduler up {up // 60} min)")
            continue
        at = datetime.fromisoformat(run["at"])
        age = round(now - at.timestamp())
        out[group] = {"at": iso(at), "age_seconds": age, "slot": run.get("slot"),
                      "sections_enqueued": run.get("sections_enqueued"),
                      **({"waiting": run["waiting"]} if run.get("waiting") else {}),
                      "duration_ms": run.get("duration_ms"),
                      "late_seconds": run.get("late_seconds", 0)}
        if age > OVERDUE_SECONDS:
            late.append(group)
    if late:
        out["reason"] = "cron overdue: " + ", ".join(late)
    return out
