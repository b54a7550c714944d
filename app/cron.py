"""One cron run: slot marker, cron lock, the group's sections, one enqueued check per section."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Callable, Iterable

from app import db
from app.settings import hostname
from app.slots import slot_name, slot_start

log = logging.getLogger(__name__)

GROUPS = ("even", "odd")
# The scheduler ticks once a minute: a run up to this long after its slot's start is on time.
LATE_AFTER_SECONDS = 90


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
    """Enqueue the checks of one group; the result the /api/cron endpoint and the CLI print.

    `force` skips the slot marker (an operator's deliberate extra run), never the lock.
    `enqueue(sections, slot=...)` tags each check with its slot, for the slot's figures
    (app.capacity). A run more than LATE_AFTER_SECONDS after its slot's start (a catch-up after
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

    slot = slot_name(now, group)
    late_seconds = max(0, round((now - slot_start(now, group)).total_seconds()))
    late = late_seconds > LATE_AFTER_SECONDS
    holder = f"{hostname()}:{time.time():.0f}"
    if not force and not services.slots.take(slot, holder):
        log.info("cron %s: slot %s already ran, skipping", group, slot)
        return result(0, message="Already ran for this slot", skipped=True)

    lock = services.cron_lock.acquire()
    if lock is None:
        if not force:
            services.slots.give_back(slot)
        raise CronLocked(services.cron_lock.status())
    try:
        with db.transaction(services.pool) as conn:
            sections = db.sections_to_check(conn, group)
        enqueued = enqueue(sections, slot=slot)
    except BaseException:
        if not force:
            services.slots.give_back(slot)  # let a retry run this slot
        raise
    finally:
        services.cron_lock.release(lock)

    extra = {}
    if not sections:
        extra["message"] = "No sections to check"
    elif enqueued == 0:
        extra["message"] = "Every section is already waiting or running"
    if late:
        extra["late_seconds"] = late_seconds
    out = result(enqueued, sections_found=len(sections), slot=slot, **extra)
    services.redis.set(services.keys.last_cron(group), json.dumps(
        {"at": now.isoformat(timespec="seconds"), "slot": slot, "sections_enqueued": enqueued,
         "sections_found": len(sections), "duration_ms": out["duration"],
         "late_seconds": late_seconds if late else 0}))
    log.info("cron run %s: found=%d enqueued=%d duration_ms=%d%s", slot, len(sections), enqueued,
             out["duration"], f" ran late by {late_seconds} s" if late else "")
    return out


def last_runs(services) -> dict:
    """The last run of each group, for the health check."""
    raw = services.redis.mget([services.keys.last_cron(g) for g in GROUPS])
    return {g: (json.loads(v) if v else None) for g, v in zip(GROUPS, raw)}
