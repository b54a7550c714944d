"""Building notification emails: subject, escaped HTML, a text part and one-click unsubscribe."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from app.changes import Change
from app.scraper import SectionInfo
from app.unsubscribe import make_token

SUBJECTS = {
    Change.SEAT_AVAILABLE: "🎉 Seat Available: {subject} {catalog_nbr} ({class_nbr})",
    Change.INSTRUCTOR_ASSIGNED: "👨‍🏫 Instructor Assigned: {subject} {catalog_nbr} ({class_nbr})",
}


def _headline(kind: Change, info: SectionInfo) -> str:
    if kind is Change.SEAT_AVAILABLE:
        return f"A seat opened up: {info.open_seats} of {info.seats_capacity} seats available."
    return f"An instructor has been named: {info.instructor}."


def build_email(kind: Change, *, to: str, user_id: str, term: str, class_nbr: str,
                info: SectionInfo, site_url: str, sender: str, unsubscribe_secret: str,
                now: float | None = None) -> dict:
    """The Resend send parameters for one watcher and one change."""
    subject = SUBJECTS[kind].format(subject=info.subject, catalog_nbr=info.catalog_nbr,
                                    class_nbr=class_nbr)
    class_link = f"{site_url}/go/asu?{urlencode({'classNbr': class_nbr, 'term': term})}"
    unsubscribe = f"{site_url}/api/unsubscribe?{urlencode({'token': make_token(user_id, unsubscribe_secret, now)})}"
    headline = _headline(kind, info)
    details = [
        ("Class", f"{info.subject} {info.catalog_nbr}: {info.title}"),
        ("Section", class_nbr),
        ("Instructor", info.instructor or "Staff"),
        ("Seats", f"{info.open_seats} open of {info.seats_capacity}"),
        ("When", info.meeting_times or "TBA"),
        ("Where", info.location or "TBA"),
    ]
    rows = "".join(
        f"<tr><td style=\"padding:2px 12px 2px 0;color:#555\">{escape(k)}</td><td>{escape(v)}</td></tr>"
        for k, v in details
    )
    html = (
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5\">"
        f"<h2>{escape(subject)}</h2><p>{escape(headline)}</p><table>{rows}</table>"
        f"<p><a href=\"{escape(class_link)}\">Open the class in the ASU catalog</a></p>"
        "<p style=\"font-size:12px;color:#777\">You get this because you watch this section. "
        f"<a href=\"{escape(unsubscribe)}\">Unsubscribe</a></p></body></html>"
    )
    text = "\n".join(
        [subject, "", headline, ""]
        + [f"{k}: {v}" for k, v in details]
        + ["", f"Open the class: {class_link}", "", f"Unsubscribe: {unsubscribe}"]
    )
    return {
        "from": sender,
        "to": [to],
        "subject": subject,
        "html": html,
        "text": text,
        "headers": {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
