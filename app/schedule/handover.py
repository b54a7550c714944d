"""Which system runs the schedule, and whether another one is seen checking sections (issue 25).

Two pieces guard the hand-over from the old Workers (docs/architecture.md, "The hand-over"):

- **The record** (`python -m app handover`, in PostgreSQL: seatwatch_handover) says which system
  runs the schedule. Without one, this scheduler runs slots only while the database shows nothing
  else checking sections: a first deploy beside a live old system waits instead of starting a
  second scheduler, and a new service with no old system starts at once, recording `vps` at its
  first slot run (so an old cron that comes back later is seen, not waited for). With `vps` it
  runs; with `old` (handed back) it waits.
- **The evidence** (app.db.checkers): sections checked outside this service's runs in the last
  hour. While this service runs the schedule, any is a second scheduler (the old cron brought back
  by a site deploy, a forgotten caller of the old route): health is degraded, naming it.

A slot run also skips the sections that anything checked since the slot began (app.schedule.cron),
so taking over right after an old run re-checks nothing, and misses nothing that run left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.db.checkers import Handover, Observation
from app.timeutil import iso

# Nothing checked any section for longer than this, while this scheduler does not run slots:
# every group runs hourly; one missed run and ten minutes of slack (as a cron group's overdue).
NOTHING_CHECKED_SECONDS = 70 * 60
HANDOVER_HINT = "`make handover` (python -m app handover) once the old cron is off"


SECOND_SCHEDULER = "another system checks the watched sections: is the old Workers cron still on?"
NOTHING_CHECKS = "no section checked for over 70 min, and this service runs no slot"


@dataclass(frozen=True)
class Verdict:
    runs_here: bool  # whether this service's scheduler runs slots
    state: str  # running | waiting | handed-back | off
    problem: str | None  # a reason to degrade health, or None
    note: str  # one line for status and health

    @property
    def summary(self) -> str | None:
        """The problem without counts or times, for an anonymous health caller."""
        if self.problem is None:
            return None
        return SECOND_SCHEDULER if self.runs_here else NOTHING_CHECKS


def _outside(obs: Observation) -> str:
    last = f", last at {iso(obs.last_outside_at)}" if obs.last_outside_at else ""
    return f"{obs.outside} section(s) checked outside this service's runs in the last hour{last}"


def decide(record: Handover | None, obs: Observation, scheduler_on: bool = True) -> Verdict:
    """What this service does with its slots and what health says, from the record and the evidence.
    `scheduler_on`: SEATWATCH_SCHEDULER (off: the schedule runs elsewhere on purpose)."""
    if scheduler_on and (record is None and obs.outside == 0 or record is not None and record.owner == "vps"):
        if obs.outside:
            return Verdict(True, "running", _outside(obs) + "; is the old Workers cron still on?",
                           _outside(obs))
        since = f" since the hand-over at {iso(record.at)}" if record else ""
        return Verdict(True, "running", None, f"this service runs the schedule{since}")
    if not scheduler_on:
        state, note = "off", "scheduler off here (SEATWATCH_SCHEDULER=off)"
    elif record is None:
        state, note = "waiting", (f"waiting for the hand-over: {_outside(obs)} (the old system?); "
                                  f"this service runs no slot until {HANDOVER_HINT}")
    else:
        state, note = "handed-back", (f"handed back to the old system at {iso(record.at)}; "
                                      "`python -m app handover --to vps` takes the schedule again")
    problem = None
    quiet = (obs.now - obs.last_any_at) if obs.last_any_at else None
    if obs.watched and (quiet is None or quiet > timedelta(seconds=NOTHING_CHECKED_SECONDS)):
        problem = (f"no section checked for over {NOTHING_CHECKED_SECONDS // 60} min, and this service "
                   f"runs no slot ({state})")
    return Verdict(False, state, problem, note)


def slot_window(start: datetime) -> tuple[datetime, datetime]:
    """The hour in which a check counts for the slot that starts at `start` (its group's next slot
    starts an hour later)."""
    return start, start + timedelta(hours=1)
