"""`python -m app preview-emails DIR`: both notification emails for a sample section, as files.

For whoever edits app/mail/templates/: open the .html files in a browser, read the .txt ones. Needs no
settings and sends nothing; the unsubscribe link is signed with a throwaway key.
"""

from __future__ import annotations

from pathlib import Path

from app.mail.build import build_email
from app.section import Change, SectionInfo

SAMPLE = SectionInfo(subject="CSE", catalog_nbr="110", title="Principles of Programming",
                     instructor="Ana Müller", seats_available=3, seats_capacity=150,
                     non_reserved_seats=2, location="Tempe - BYENG 210",
                     meeting_times="MW 10:30AM - 11:45AM")

# name -> (change, section): the seat email in both variants (non-reserved count known or not).
PREVIEWS = {
    "seat_available": (Change.SEAT_AVAILABLE, SAMPLE),
    "seat_available_unverified": (Change.SEAT_AVAILABLE,
                                  SectionInfo(**{**SAMPLE.__dict__, "non_reserved_seats": None,
                                                 "location": "", "meeting_times": ""})),
    "instructor_assigned": (Change.INSTRUCTOR_ASSIGNED, SAMPLE),
}


def write_previews(directory: Path, site_url: str = "https://pickmyclass.app") -> list[Path]:
    """Render every preview into `directory` (created if needed); the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (kind, info) in PREVIEWS.items():
        email = build_email(kind, to="student@asu.edu", user_id="00000000-0000-0000-0000-000000000000",
                            term="2261", class_nbr="12431", info=info, site_url=site_url,
                            sender="PickMyClass <alerts@pickmyclass.app>",
                            unsubscribe_secret="preview-only")
        for ext in ("html", "text"):
            path = directory / f"{name}.{'txt' if ext == 'text' else 'html'}"
            path.write_text(email[ext], encoding="utf-8")
            written.append(path)
    return written
