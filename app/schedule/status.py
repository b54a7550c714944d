"""`python -m app status`: the capacity table (app.schedule.capacity) with the schedule's own verdicts.

The same judgements as the health check's `scheduler` and `cron` checks, from the same functions:
the scheduler is alive only with a fresh beat that says `scheduler: true` (a worker-only host's
beat never counts), and a group is overdue when its last run is older than 70 minutes or its
record is missing after a live scheduler has been up that long.
"""

from __future__ import annotations

import time

from app import db
from app.db import checkers
from app.queue.heartbeat import scheduler_status
from app.schedule import capacity, cron, handover
from app.timeutil import iso

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def report(services, queue_key: str) -> dict:
    rep = capacity.report(services.redis, services.keys, queue_key)
    scheduler = scheduler_status(services.heartbeat.beats(), required=services.settings.scheduler)
    runs = cron.overdue(cron.last_runs(services), scheduler, time.time())
    with db.transaction(services.pool) as conn:
        record = checkers.read_handover(conn)
        since, me = checkers.outside_since(record), services.settings.checker
        obs = checkers.observe(conn, since, me)
        outside = checkers.outside_sections(conn, since, me) if obs.outside else []
    verdict = handover.decide(record, obs, services.settings.scheduler)
    rep["scheduler"], rep["cron"] = scheduler, runs
    rep["schedule_owner"] = {"state": verdict.state, "note": verdict.note, "problem": verdict.problem,
                             "outside": [f"{t}/{n} at {iso(at)}" for t, n, at in outside]}
    reasons = [r for r in (rep.get("reason"), runs.get("reason"), verdict.problem) if r]
    status = rep.get("status", "healthy")
    if runs.get("reason") or verdict.problem:
        status = max(status, "degraded", key=_RANK.__getitem__)
    if not scheduler["alive"]:
        status = "unhealthy"
        reasons.insert(0, ("consumers dead: " if scheduler.get("scheduler") == "off"
                           else "scheduler dead: ") + scheduler["reason"])
    if status != "healthy":
        rep["status"], rep["reason"] = status, "; ".join(reasons)
    return rep


def format_table(rep: dict, breaker_state: str) -> str:
    lines = capacity.format_table(rep, breaker_state).split("\n")
    s = rep["scheduler"]
    if s.get("scheduler") == "off":
        line = ("scheduler off here (SEATWATCH_SCHEDULER=off); consumers "
                + (f"alive, {s['host']} beat {s['age_seconds']:.0f} s ago" if s["alive"]
                   else f"DEAD: {s['reason']}"))
    elif s["alive"]:
        line = (f"scheduler alive on {s['host']} (beat {s['age_seconds']:.0f} s ago"
                + (f", up {s['up_seconds'] // 60} min" if s.get("up_seconds") is not None else "")
                + ")")
    else:
        line = f"scheduler DEAD: {s['reason']}"
    if s["worker_hosts"]:
        line += f"; worker-only hosts: {', '.join(s['worker_hosts'])}"
    owner = rep.get("schedule_owner")
    extra = []
    if owner:
        extra.append(f"schedule: {owner['state']}: {owner['problem'] or owner['note']}")
        if owner["outside"]:
            extra.append("  checked outside (newest first): " + ", ".join(owner["outside"]))
    return "\n".join([*lines[:-1], line, *extra, lines[-1]])
