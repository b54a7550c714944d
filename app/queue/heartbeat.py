"""The consumer's heartbeat: proof that a worker is alive and its scheduler ticks.

One hash field per host; the value is JSON naming the process that beat: when (`at`, epoch
seconds), which release (`release`, the deploy's SEATWATCH_RELEASE), which process (`pid`), since
when it runs (`started`: a Redis that lost its data gets it back with the next beat) and whether
it runs the periodic scheduler. Only a fresh beat that says `scheduler: true` proves the
schedule runs (`scheduler_status`): a worker-only host (`--no-scheduler`) beats too, and must
not make a scheduler that stopped look alive. The deploy's health gate reads it (`python -m app
heartbeat`) to require a beat from the release it just started, not an older process's.
"""

from __future__ import annotations

import json
import os
import time

import redis

from app.keys import Keys
from app.settings import hostname
from app.timeutil import iso_from_epoch

INTERVAL_SECONDS = 300  # beat period on the scheduler tick; the health check allows two of them
# The consumer beats at start and every INTERVAL_SECONDS: two missed beats and a minute of slack.
STALE_SECONDS = 2 * INTERVAL_SECONDS + 60
PROCESS_STARTED = time.time()  # this process's start, as its beats report it


def _decode(value) -> dict | None:
    """A stored beat; the bare-epoch format of earlier releases is still understood."""
    if isinstance(value, bytes):
        value = value.decode()
    try:
        beat = json.loads(value)
    except (TypeError, ValueError):
        return None
    if isinstance(beat, (int, float)):
        return {"at": float(beat), "release": None, "pid": None, "scheduler": None}
    if isinstance(beat, dict) and isinstance(beat.get("at"), (int, float)):
        return beat
    return None


class Heartbeat:
    def __init__(self, client: redis.Redis, keys: Keys, release: str = "dev",
                 scheduler: bool = True):
        self.client = client
        self.key = keys.heartbeat
        self.release = release
        self.scheduler = scheduler

    def beat(self, now: float | None = None) -> None:
        value = {"at": round(time.time() if now is None else now, 3), "release": self.release,
                 "pid": os.getpid(), "started": round(PROCESS_STARTED, 3),
                 "scheduler": self.scheduler}
        self.client.hset(self.key, hostname(), json.dumps(value))

    def beats(self, now: float | None = None) -> list[dict]:
        """Every host's last beat, newest first, with its age in seconds."""
        now = time.time() if now is None else now
        out = []
        for host, raw in self.client.hgetall(self.key).items():
            beat = _decode(raw)
            if beat is None:
                continue
            host = host.decode() if isinstance(host, bytes) else host
            out.append({"host": host, **beat, "age_seconds": round(now - beat["at"], 1)})
        return sorted(out, key=lambda b: b["at"], reverse=True)

    def latest(self) -> tuple[str | None, float | None]:
        """(host, epoch seconds) of the most recent beat, or (None, None)."""
        beats = self.beats()
        if not beats:
            return None, None
        return beats[0]["host"], beats[0]["at"]


def scheduler_status(beats: list[dict], required: bool = True) -> dict:
    """Whether a scheduler runs, from `beats()` (newest first): alive only with a fresh beat that
    says `scheduler: true` (a worker-only host's, or an old release's bare epoch, never counts).
    `up_seconds`: how long the longest-running live scheduler has run (None when unknown), which
    the cron check needs to call a missing last-run record overdue.

    `required` False (SEATWATCH_SCHEDULER=off: the schedule runs elsewhere on purpose): alive is
    any consumer's fresh beat, as no scheduler is expected."""
    if not required:
        return _consumers_only(beats)
    schedulers = [b for b in beats if b.get("scheduler") is True]
    workers = sorted(b["host"] for b in beats
                     if b.get("scheduler") is False and b["age_seconds"] <= STALE_SECONDS)
    suffix = f" (worker-only hosts beat: {', '.join(workers)})" if workers else ""
    if not schedulers:
        return {"alive": False, "host": None, "last_heartbeat": None, "age_seconds": None,
                "up_seconds": None, "worker_hosts": workers,
                "reason": "no scheduler heartbeat" + suffix if beats else "no consumer heartbeat"}
    newest = schedulers[0]
    alive = newest["age_seconds"] <= STALE_SECONDS
    fresh = [b for b in schedulers if b["age_seconds"] <= STALE_SECONDS and b.get("started")]
    out = {"alive": alive, "host": newest["host"], "last_heartbeat": iso_from_epoch(newest["at"]),
           "age_seconds": newest["age_seconds"],
           "up_seconds": round(max(b["at"] + b["age_seconds"] - b["started"] for b in fresh))
           if fresh else None,
           "worker_hosts": workers}
    if not alive:
        out["reason"] = f"last scheduler heartbeat {newest['age_seconds']:.0f} s ago" + suffix
    return out


def _consumers_only(beats: list[dict]) -> dict:
    out = {"alive": False, "host": None, "last_heartbeat": None, "age_seconds": None,
           "up_seconds": None, "worker_hosts": [], "scheduler": "off"}
    if not beats:
        return {**out, "reason": "no consumer heartbeat"}
    newest = beats[0]
    out.update(alive=newest["age_seconds"] <= STALE_SECONDS, host=newest["host"],
               last_heartbeat=iso_from_epoch(newest["at"]), age_seconds=newest["age_seconds"])
    if not out["alive"]:
        out["reason"] = f"last consumer heartbeat {newest['age_seconds']:.0f} s ago"
    return out
