"""`python -m app status`: the capacity table (app.schedule.capacity) with the schedule's own verdicts.

The same judgements as the health check's `scheduler` and `cron` checks, from the same functions:
the scheduler is alive only with a fresh beat that says `scheduler: true` (a worker-only host's
beat never counts), and a group is overdue when its last run is older than 70 minutes or its
record is missing after a live scheduler has been up that long.
"""

from __future__ import annotations

import time

from app.queue.heartbeat import scheduler_status
from app.schedule import capacity, cron

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def report(services, queue_key: str) -> dict:
    rep = capacity.report(services.redis, services.keys, queue_key)
    scheduler = scheduler_status(services.heartbeat.beats(), required=services.settings.scheduler)
    runs = cron.overdue(cron.last_runs(services), scheduler, time.time())
    rep["scheduler"], rep["cron"] = scheduler, runs
    reasons = [r for r in (rep.get("reason"), runs.get("reason")) if r]
    status = rep.get("status", "healthy")
    if runs.get("reason"):
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
    return "\n".join([*lines[:-1], line, lines[-1]])
