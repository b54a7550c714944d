"""The consumer's heartbeat: proof that a worker is alive and its scheduler ticks.

One hash field per host; the value is JSON naming the process that beat: when (`at`, epoch
seconds), which release (`release`, the deploy's SEATWATCH_RELEASE), which process (`pid`) and
whether it runs the periodic scheduler. The deploy's health gate reads it (`python -m app
heartbeat`) to require a beat from the release it just started, not an older process's.
"""

from __future__ import annotations

import json
import os
import time

import redis

from app.keys import Keys
from app.settings import hostname

INTERVAL_SECONDS = 300  # beat period on the scheduler tick; the health check allows two of them


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
                 "pid": os.getpid(), "scheduler": self.scheduler}
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
