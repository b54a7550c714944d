"""Change detection: what happened to a section between the stored state and a fresh scrape.

Two rules keep a scraper's flaps from emailing anyone (issue 26):

- Open seats are the non-reserved count whenever a scrape has one, as the site counts them
  (`nonReserved ?? seatsAvailable`): 0 is closed, a student cannot take a reserved seat. When a
  scrape cannot read the count (null) after one that could, the last known count carries over
  (capped by the seats available: non-reserved seats never outnumber seats), so an unknown count
  never makes an opening or a fill by itself. A section that never showed a count is judged on
  seats available.
- An empty or null instructor is "unknown", never a change: the last known name carries over.
  Only a change from a known value (a name, or Staff/TBA) to another real name is news.
"""

from __future__ import annotations

import dataclasses

from app.section import Change, SectionInfo, is_unnamed


def _stored_open_seats(previous: dict) -> int:
    nrs = previous.get("non_reserved_seats")
    return nrs if nrs is not None else (previous.get("seats_available") or 0)


def carried(previous: dict | None, current: SectionInfo) -> SectionInfo:
    """`current` as this service keeps it: an unknown non-reserved count or an unreadable
    instructor replaced by what the stored state last knew."""
    if previous is None:
        return current
    nrs = current.non_reserved_seats
    if nrs is None and previous.get("non_reserved_seats") is not None:
        nrs = min(previous["non_reserved_seats"], current.seats_available)
    instructor = current.instructor
    if not instructor.strip():
        instructor = (previous.get("instructor_name") or "").strip()
    return dataclasses.replace(current, non_reserved_seats=nrs, instructor=instructor)


def same_name(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def detect(previous: dict | None, current: SectionInfo) -> list[Change]:
    """Changes from the stored state row to `current` as carried (see `carried`); none for a
    first sighting."""
    if previous is None:
        return []  # baseline only: no one is told about a section we have never seen
    found: list[Change] = []
    before, now = _stored_open_seats(previous), current.open_seats
    if before == 0 and now > 0:
        found.append(Change.SEAT_AVAILABLE)
    elif before > 0 and now == 0:
        found.append(Change.SEATS_FILLED)
    known_before = (previous.get("instructor_name") or "").strip()
    if known_before and not is_unnamed(current.instructor) and not same_name(known_before, current.instructor):
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
