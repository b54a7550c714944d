"""A class section as this service knows it: the figures a scrape gives (SectionInfo) and the news
about it that can email a watcher (Change).

The words app.check and app.mail share: the check finds the news, mail writes it down. Both import
them from here, so neither package imports the other's vocabulary back (mail never imports app.check).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class SectionInfo:
    subject: str
    catalog_nbr: str
    title: str
    instructor: str
    seats_available: int
    seats_capacity: int
    non_reserved_seats: int | None
    location: str
    meeting_times: str

    @property
    def open_seats(self) -> int:
        """Seats a watcher can take: the non-reserved count when the scraper knows it."""
        return self.non_reserved_seats if self.non_reserved_seats is not None else self.seats_available


class Change(str, Enum):
    SEAT_AVAILABLE = "seat_available"          # 0 open seats -> some
    SEATS_FILLED = "seats_filled"              # some -> 0: clears seat notifications
    INSTRUCTOR_ASSIGNED = "instructor_assigned"  # "Staff"/empty -> a name


# The changes that email watchers; the value is the notifications_sent.notification_type.
NOTIFYING = (Change.SEAT_AVAILABLE, Change.INSTRUCTOR_ASSIGNED)


def is_unnamed(instructor: str | None) -> bool:
    return not instructor or instructor.strip().lower() in ("staff", "tba")
