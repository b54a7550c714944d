"""Capacity you can see: each slot's figures, the real throughput, the backlog and its drain time.

A cron run opens its slot's record (a hash, `slot-stats:<slot>`) with the number of checks it
enqueued, before they reach the queue; each check of the slot adds its outcome when it is done
for good (checked, changed, emailed, failed after every retry, or superseded: dropped because
its retry would have come after the section's next slot). The check that brings `done`
up to `enqueued` closes the slot: one log line with the figures. From the recent slots' records
come the throughput (checks per minute while a slot was being worked), the expected time for the
queue to drain, and the one judgement health makes: a slot that did not finish within its 30
minutes (the next one is due then) is degraded capacity, with the reason.

Nothing here runs while the service is idle: no Redis command per tick (issue 12's budget).
"""

from __future__ import annotations

import json
import math
import logging
import time
from datetime import datetime, timedelta, timezone

from app.keys import Keys
from app.schedule.cron import GROUPS
from app.schedule.slots import SLOT_MINUTE, slot_name
from app.timeutil import iso_from_epoch

log = logging.getLogger(__name__)

SLOT_SECONDS = 30 * 60  # a slot's checks must be done before the next slot is due
RECENT_SLOTS = 7  # about the last 3 hours: the throughput's window and the status table's rows
STATS_TTL_SECONDS = 26 * 3600
OUTCOMES = ("checked", "changed", "emailed", "failed", "superseded")


def open_slot(client, keys: Keys, slot: str, group: str, enqueued: int,
              now: float | None = None) -> None:
    """Open (or add to) a slot's record. A cron run does the same inside its enqueue script
    (app.schedule.pending), before the checks reach the queue, so none can finish first; an operator's
    forced second run of a slot adds to it."""
    if not enqueued:
        # Nothing to count (no sections, or all still pending from a slot not yet finished, which
        # then stays the last slot health judges). Idle hours cost no commands here.
        return
    now = time.time() if now is None else now
    key = keys.slot_stats(slot)
    with client.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, "group", group)
        pipe.hsetnx(key, "started_at", now)
        pipe.hincrby(key, "enqueued", enqueued)
        pipe.expire(key, STATS_TTL_SECONDS)
        pipe.execute()


def record(client, keys: Keys, slot: str, *, checked: int = 0, changed: int = 0,
           emailed: int = 0, failed: int = 0, superseded: int = 0,
           now: float | None = None, first=None) -> dict | None:
    """One check of `slot` done for good; returns the slot's figures when this one closed it.
    `first(pipeline)`: the caller's commands, sent in the same round trip (app.tasks: the check's
    pending marker freed)."""
    now = time.time() if now is None else now
    key = keys.slot_stats(slot)
    with client.pipeline(transaction=True) as pipe:
        if first is not None:
            first(pipe)
        for name, n in (("checked", checked), ("changed", changed), ("emailed", emailed),
                        ("failed", failed), ("superseded", superseded)):
            if n:
                pipe.hincrby(key, name, n)
        pipe.hincrby(key, "done", 1)
        pipe.hset(key, "last_at", now)
        pipe.expire(key, STATS_TTL_SECONDS)  # also for a record whose slot's one has expired
        pipe.hmget(key, "enqueued", "started_at")
        *_, done, _, _, (enqueued, _) = pipe.execute()
    if enqueued is None or int(done) != int(enqueued):
        return None  # not the slot's last check (or a slot this service did not open)
    client.hset(key, "finished_at", now)
    figures = summary(slot, client.hgetall(key))
    log.info("slot %s finished: enqueued=%d checked=%d changed=%d emailed=%d failed=%d "
             "duration_s=%d", slot, figures["sections"], figures["checked"], figures["changed"],
             figures["emailed"], figures["failed"], figures["duration_seconds"])
    return figures


def summary(slot: str, raw: dict) -> dict:
    """A slot's record as numbers (raw: the hash as read, strings)."""
    num = {k: int(raw.get(k, 0) or 0) for k in ("enqueued", *OUTCOMES, "done")}
    started = float(raw["started_at"]) if raw.get("started_at") else None
    last = float(raw["last_at"]) if raw.get("last_at") else None
    finished = num["done"] >= num["enqueued"]
    finished_at = float(raw["finished_at"]) if finished and raw.get("finished_at") else None
    end = finished_at or last
    return {"slot": slot, "group": raw.get("group") or slot.rsplit(":", 1)[-1],
            "started_at": started, "sections": num["enqueued"], "done": num["done"],
            "checked": num["checked"], "changed": num["changed"], "emailed": num["emailed"],
            "failed": num["failed"], "superseded": num["superseded"], "remaining": max(0, num["enqueued"] - num["done"]),
            "finished": finished, "finished_at": finished_at,
            "duration_seconds": round(end - started) if end and started else 0,
            "busy_seconds": (last - started) if last and started else 0.0}


def recent_slot_names(now: datetime, n: int = RECENT_SLOTS) -> list[str]:
    """The last n slots, newest first, from this hour's :30 slot (before :30 it has not started
    and has no record: a manual run never takes a slot ahead, app.schedule.cron)."""
    t = now.replace(minute=30, second=0, microsecond=0)
    out = []
    while len(out) < n:
        group = next(g for g, m in SLOT_MINUTE.items() if m == t.minute)
        out.append(slot_name(t, group))
        t -= timedelta(minutes=30)
    return out


def report(client, keys: Keys, queue_key: str, now: datetime | None = None) -> dict:
    """Throughput, backlog, drain time and each group's last slot; `status`/`reason` when a slot
    did not finish within its 30 minutes. The health check and `python -m app status` show it."""
    now = now or datetime.now(timezone.utc)
    names = recent_slot_names(now)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.slot_stats(name))
        pipe.llen(queue_key)
        pipe.mget([keys.last_cron(g) for g in GROUPS])
        *raws, backlog, last_cron = pipe.execute()
    slots = [summary(name, raw) for name, raw in zip(names, raws) if raw]

    worked = [s for s in slots if s["done"]]
    busy = sum(max(1.0, s["busy_seconds"]) for s in worked)
    throughput = round(sum(s["done"] for s in worked) / busy * 60, 1) if worked else None
    out = {"throughput_per_minute": throughput, "throughput_slots": len(worked),
           "backlog": backlog, "drain_seconds": _drain(backlog, throughput), "groups": {}}

    runs = dict(zip(GROUPS, (json.loads(v) if v else None for v in last_cron)))
    for group in GROUPS:
        last = next((s for s in slots if s["group"] == group), None)
        run = runs[group] or {}
        if last is None:
            out["groups"][group] = None
            continue
        out["groups"][group] = {
            **{k: last[k] for k in ("slot", "sections", "done", "checked", "changed", "emailed",
                                    "failed", "remaining", "finished", "duration_seconds")},
            "started_at": iso_from_epoch(last["started_at"]),
            "finished_at": iso_from_epoch(last["finished_at"]),
            "drain_seconds": _drain(last["remaining"], throughput),
            "late_seconds": run.get("late_seconds", 0) if run.get("slot") == last["slot"] else 0,
        }

    overrun = _overrun(slots, now.timestamp())
    if overrun:
        out.update(status="degraded", reason=overrun)
    return out


def _drain(backlog: int, throughput: float | None) -> int | None:
    if not backlog:
        return 0
    return math.ceil(backlog / throughput * 60) if throughput else None  # None: no rate yet


def _overrun(slots: list[dict], now: float) -> str | None:
    """Why the last slot did not fit in its 30 minutes, if it did not. The last slot is the newest
    one that has finished or has had its 30 minutes; a younger one still running is on time."""
    for s in slots:
        age = now - (s["started_at"] or now)
        if not s["finished"] and age < SLOT_SECONDS:
            continue
        if not s["finished"]:
            return (f"slot {s['slot']} not finished after {age / 60:.0f} min: "
                    f"{s['done']} of {s['sections']} checks done")
        if s["duration_seconds"] > SLOT_SECONDS:
            return (f"slot {s['slot']} took {s['duration_seconds'] / 60:.0f} min "
                    f"(over its {SLOT_SECONDS // 60}): {s['sections']} sections")
        return None
    return None


def _minutes(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_table(rep: dict, breaker_state: str) -> str:
    """The operator's short table (`python -m app status`)."""
    rows = [("group", "last run", "late", "sections", "done", "failed", "changed", "emailed",
             "drain")]
    for group, g in rep["groups"].items():
        if g is None:
            rows.append((group, "never", "", "", "", "", "", "", ""))
            continue
        rows.append((group, (g["started_at"] or "")[:16].replace("T", " ") + "Z",
                     _minutes(g["late_seconds"]) if g["late_seconds"] else "-",
                     str(g["sections"]), str(g["done"]), str(g["failed"]), str(g["changed"]),
                     str(g["emailed"]),
                     f"done in {_minutes(g['duration_seconds'])}" if g["finished"]
                     else _minutes(g["drain_seconds"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    rate = rep["throughput_per_minute"]
    lines.append(f"throughput {rate if rate is not None else 'unknown'} checks/min "
                 f"(last {rep['throughput_slots']} slots), backlog {rep['backlog']}, "
                 f"drain {_minutes(rep['drain_seconds'])}; breaker {breaker_state}")
    lines.append(f"status {rep.get('status', 'healthy')}"
                 + (f": {rep['reason']}" if rep.get("reason") else ""))
    return "\n".join(lines)
