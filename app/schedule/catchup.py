"""No slot skipped: on each scheduler tick, each group's latest slot runs if it has not run.

huey's periodic tasks look at the current minute only, so a restart, deploy or reboot that spans
:00 or :30 skipped that slot. Instead, on each tick (the first one right at start), the latest
slot of each group (the last :00 for even, the last :30 for odd, whichever hour it fell in) runs
unless its marker says it ran (app.schedule.slots, app.schedule.cron): a slot missed during a
restart runs once, late, and says by how much. After a long outage that is one late run per group, not one per
missed slot. A run refused by a held cron lock, one that failed, or one killed before it marked
its slot, is run again by the next tick of any scheduler.

What already ran is remembered in this process, so an idle scheduler asks Redis nothing about
slots on a tick (issue 12's command budget). That memory is forgotten when Redis is seen to have
lost its data (app.schedule.sentinel, every few minutes): the markers in Redis then decide again, and the
slots whose queued checks were lost run again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from app.schedule.cron import GROUPS, CronLocked
from app.schedule.sentinel import PROBE_SECONDS
from app.schedule.slots import latest_slot

log = logging.getLogger(__name__)


def due_slots(now: datetime) -> list[tuple[str, str]]:
    """(group, slot) of each group's latest slot, earliest first."""
    latest = {g: latest_slot(now, g) for g in GROUPS}
    return [(g, latest[g][0]) for g in sorted(GROUPS, key=lambda g: latest[g][1])]


class SlotRunner:
    """Runs each group's latest slot once per process; `run(group, now)` is one cron run (app.schedule.cron).

    `lost()` (optional) says whether Redis lost its data since it was last asked; it is asked
    at most every PROBE_SECONDS of the ticks' clock (`now`, injected by tests).
    """

    def __init__(self, run: Callable[[str, datetime], dict],
                 lost: Callable[[], bool] | None = None, probe_every: float = PROBE_SECONDS):
        self.run = run
        self.lost = lost
        self.probe_every = timedelta(seconds=probe_every)
        self.settled: set[str] = set()  # slots this process saw run (by itself or another)
        self._probed: datetime | None = None

    def tick(self, now: datetime) -> list[dict]:
        self._probe(now)
        results = []
        for group, slot in due_slots(now):
            if slot in self.settled:
                continue
            try:
                result = self.run(group, now)
            except CronLocked as exc:
                log.warning("cron slot %s: %s; trying again next tick", slot, exc)
                continue
            except Exception:
                log.exception("cron slot %s failed; trying again next tick", slot)
                continue
            results.append(result)
            if result.get("waiting"):  # not run here yet (the hand-over): ask again next tick
                continue
            self.settled.add(slot)
        self.settled &= {slot for _, slot in due_slots(now)}  # only the latest slots can be due
        return results

    def _probe(self, now: datetime) -> None:
        if self.lost is None:
            return
        # abs(): a clock set back must not stop the probe for as long
        if self._probed is not None and abs(now - self._probed) < self.probe_every:
            return
        self._probed = now
        try:
            lost = self.lost()
        except Exception:
            log.exception("could not ask Redis whether it lost its data; asking again next tick")
            self._probed = None
            return
        if lost:
            self.settled.clear()
