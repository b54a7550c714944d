"""A simulated scraper for `make dev`: sections whose seats open and fill as time passes.

Same `fetch(term, class_nbr) -> SectionInfo` as app.check.scraper.ScraperClient, no network. Each
section alternates between full and open every `period` seconds (offset by its class number, so
sections change at different moments), and its instructor goes from "Staff" to a name in every
other double period, so both kinds of email appear. Deterministic for a given time: restarting
the worker does not reshuffle what it saw.
"""

from __future__ import annotations

import time
import zlib
from typing import Callable

from app.section import SectionInfo

# A few real-looking sections; any other class number gets a generic one.
CATALOG = {
    "12430": ("CSE", "110", "Principles of Programming", "Ana Müller", "Tempe - BYENG 210", "MW 10:30AM - 11:45AM"),
    "12431": ("CSE", "205", "Object-Oriented Programming & Data Structures", "Li Wei", "Tempe - CAVC 351", "TTh 1:30PM - 2:45PM"),
    "20415": ("MAT", "265", "Calculus for Engineers I", "Sam O'Brien", "", ""),
    "30722": ("ENG", "101", "First-Year Composition", "Priya Natarajan", "iCourse", ""),
}


class SimulatedScraper:
    def __init__(self, period: float = 120.0, clock: Callable[[], float] = time.time):
        self.period = period
        self.clock = clock

    def _phase(self, class_nbr: str, length: float) -> int:
        # crc32, not hash(): stable across processes (web, worker, CLI agree on a section's state).
        offset = zlib.crc32(class_nbr.encode()) % 1000 / 1000 * length
        return int((self.clock() + offset) // length)

    def fetch(self, term: str, class_nbr: str) -> SectionInfo:
        subject, catalog_nbr, title, name, location, times = CATALOG.get(
            class_nbr, ("DEV", class_nbr[-3:], f"Simulated section {class_nbr}", "Dev Instructor", "", ""))
        is_open = self._phase(class_nbr, self.period) % 2 == 1
        seats = 1 + int(class_nbr[-1:] or 0) % 4 if is_open else 0
        named = self._phase(class_nbr, 2 * self.period) % 2 == 1
        # Every other section has a known non-reserved count, so both seat-email variants show up.
        known = int(class_nbr[-1:] or 0) % 2 == 0
        return SectionInfo(subject=subject, catalog_nbr=catalog_nbr, title=title,
                           instructor=name if named else "Staff", seats_available=seats,
                           seats_capacity=40, non_reserved_seats=seats if known else None,
                           location=location, meeting_times=times)
