"""Change detection: what happened to a section between the stored state and a fresh scrape."""

from __future__ import annotations

from app.section import Change, SectionInfo, is_unnamed


def open_seats_compared(previous: dict, current: SectionInfo) -> tuple[int, int]:
    """(before, now) on one basis: non-reserved seats when both states know them, otherwise seats
    available. A scraper that sometimes cannot read the reservation table (5 seats, non-reserved
    0, then null, then 0) must not read as filled, opened, filled: each "opening" would email."""
    before_nrs = previous.get("non_reserved_seats")
    if before_nrs is not None and current.non_reserved_seats is not None:
        return before_nrs, current.non_reserved_seats
    return previous.get("seats_available") or 0, current.seats_available


def detect(previous: dict | None, current: SectionInfo) -> list[Change]:
    """Changes from the stored `class_states` row to `current`; none for a first sighting."""
    if previous is None:
        return []  # baseline only: no one is told about a section we have never seen
    found: list[Change] = []
    before, now = open_seats_compared(previous, current)
    if before == 0 and now > 0:
        found.append(Change.SEAT_AVAILABLE)
    elif before > 0 and now == 0:
        found.append(Change.SEATS_FILLED)
    if is_unnamed(previous.get("instructor_name")) and not is_unnamed(current.instructor):
        found.append(Change.INSTRUCTOR_ASSIGNED)
    return found


def state_values(info: SectionInfo) -> dict:
    """The class_states columns for a scrape."""
    return {
        "subject": info.subject,
        "catalog_nbr": info.catalog_nbr,
        "title": info.title,
        "instructor_name": info.instructor,
        "seats_available": info.seats_available,
        "seats_capacity": info.seats_capacity,
        "non_reserved_seats": info.non_reserved_seats,
        "location": info.location,
        "meeting_times": info.meeting_times,
    }
