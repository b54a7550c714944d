"""No slot skipped: the scheduler's tick runs every slot of the current hour that is due.

huey's periodic tasks look at the current minute only, so a restart, deploy or reboot that spans
:00 or :30 skipped that slot. Instead, on each tick (the first one right at start), every slot of
the current hour whose minute has passed runs unless it already did: the slot marker (SET NX,
app.slots) keeps it to once across hosts and /api/cron calls, so a slot missed during a restart
runs once, late, and says by how much (app.cron). A run refused by a held cron lock, or one that
failed (the marker is given back), is tried again on the next tick, within the hour.

What already ran is remembered in this process, so an idle scheduler asks Redis nothing on a
tick: one SET NX per slot and process is the whole cost (issue 12's command budget).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from app.cron import GROUPS, CronLocked
from app.slots import slot_name, slot_start

log = logging.getLogger(__name__)


def due_slots(now: datetime) -> list[tuple[str, str]]:
    """(group, slot) of the current hour whose start has passed, earliest first."""
    due = [(g, slot_name(now, g)) for g in GROUPS if slot_start(now, g) <= now]
    return sorted(due, key=lambda gs: slot_start(now, gs[0]))


class SlotRunner:
    """Runs each due slot once per process; `run(group, now)` is one cron run (app.cron)."""

    def __init__(self, run: Callable[[str, datetime], dict]):
        self.run = run
        self.settled: set[str] = set()  # slots this process saw run (by itself or another)

    def tick(self, now: datetime) -> list[dict]:
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
            self.settled.add(slot)
            results.append(result)
        current = {slot for _, slot in due_slots(now)}
        self.settled &= current  # only this hour's slots are ever due: forget the rest
        return results
