"""Building notification emails: subject, escaped HTML, a text part and one-click unsubscribe.

The bodies are Jinja2 templates under app/mail/templates/ (a designer can open them), laid out like the
emails students already get from the running site. HTML templates are autoescaped: everything the
scraper says (titles, instructor names, rooms) is text, never markup. The text part is rendered
from the same values without escaping.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from app.mail.unsubscribe import make_token
from app.section import Change, SectionInfo

SUBJECTS = {
    Change.SEAT_AVAILABLE: "🎉 Seat Available: {subject} {catalog_nbr} ({class_nbr})",
    Change.INSTRUCTOR_ASSIGNED: "👨‍🏫 Instructor Assigned: {subject} {catalog_nbr} ({class_nbr})",
}

# Change -> template basename; `.html.j2` and `.txt.j2` of each exist under app/mail/templates/.
TEMPLATES = {
    Change.SEAT_AVAILABLE: "seat_available",
    Change.INSTRUCTOR_ASSIGNED: "instructor_assigned",
}

# The card's accent colours, as the site's emails have them (header gradient, card border, button).
COLOURS = {
    Change.SEAT_AVAILABLE: ("#667eea", "#764ba2"),
    Change.INSTRUCTOR_ASSIGNED: ("#f59e0b", "#ea580c"),
}


if TYPE_CHECKING:
    from jinja2 import Environment


@lru_cache(maxsize=1)
def environment() -> "Environment":
    # Jinja2 is imported here, on the first email, not with the module: web imports this module
    # (through app.tasks) and never renders an email, and an idle worker need not carry it
    # either (~2 MB of RSS each, bench/memory.py).
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    # StrictUndefined: a typo in a template fails the test suite instead of sending a blank.
    return Environment(
        loader=PackageLoader("app.mail", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def template_values(kind: Change, *, term: str, class_nbr: str, info: SectionInfo,
                    class_link: str, unsubscribe_url: str) -> dict:
    """What the templates see: raw values (escaping is the template engine's job)."""
    colour_from, colour_to = COLOURS[kind]
    return {
        "subject": info.subject, "catalog_nbr": info.catalog_nbr, "title": info.title,
        "class_nbr": class_nbr, "term": term,
        "instructor": info.instructor or "Staff",
        "location": info.location, "meeting_times": info.meeting_times,
        "open_seats": info.open_seats,
        "non_reserved_known": info.non_reserved_seats is not None,
        "seats_available": info.seats_available, "seats_capacity": info.seats_capacity,
        "class_link": class_link, "unsubscribe_url": unsubscribe_url,
        "colour_from": colour_from, "colour_to": colour_to,
    }


def render(kind: Change, values: dict) -> tuple[str, str]:
    """(html, text) of one email."""
    env = environment()
    name = TEMPLATES[kind]
    html = env.get_template(f"{name}.html.j2").render(values).strip() + "\n"
    text = env.get_template(f"{name}.txt.j2").render(values).strip() + "\n"
    return html, text


class EmailComposer:
    """The emails of one change of one section, one per recipient.

    Only the unsubscribe link differs from one recipient to the next, so the templates are
    rendered once, with a marker where the link goes, and each recipient's email is that text
    with their own link put in: escaped as autoescape would in the HTML, as is in the text part.
    The bytes are the ones a render per recipient gives (tests/test_mail.py compares them), so
    payloads and idempotency keys are what they were. A notifying check with 100 watchers
    rendered 200 templates; now it renders 2 (bench/check_cost.py).
    """

    def __init__(self, kind: Change, *, term: str, class_nbr: str, info: SectionInfo,
                 site_url: str, sender: str, unsubscribe_secret: str, now: float | None = None):
        self.sender = sender
        self.subject = SUBJECTS[kind].format(subject=info.subject, catalog_nbr=info.catalog_nbr,
                                             class_nbr=class_nbr)
        self.unsubscribe_base = f"{site_url}/api/unsubscribe?"
        self.secret = unsubscribe_secret
        self.now = now
        class_link = f"{site_url}/go/asu?{urlencode({'classNbr': class_nbr, 'term': term})}"
        self.html, self.text = render(kind, template_values(
            kind, term=term, class_nbr=class_nbr, info=info, class_link=class_link,
            unsubscribe_url=_LINK_MARKER))

    def email(self, *, to: str, user_id: str) -> dict:
        """The Resend send parameters for one recipient."""
        from markupsafe import escape  # Jinja2's own escaping (loaded with it by render)

        token = make_token(user_id, self.secret, self.now)
        unsubscribe = self.unsubscribe_base + urlencode({"token": token})
        # Keys in jsonb's own order (shorter first, then bytewise): the batch's bytes as encoded
        # when stored are then the bytes of any later send of it, decoded from jsonb (app.db.batches).
        return {
            "to": [to],
            "from": self.sender,
            "html": self.html.replace(_LINK_MARKER, str(escape(unsubscribe))),
            "text": self.text.replace(_LINK_MARKER, unsubscribe),
            "headers": {
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            "subject": self.subject,
        }


# Where the unsubscribe link goes in a rendered email. Random per process and NUL-framed, so no
# value from the scraper (a title, a room) can contain it; autoescape leaves it as it is.
_LINK_MARKER = f"\x00unsubscribe-{secrets.token_hex(8)}\x00"


def build_email(kind: Change, *, to: str, user_id: str, term: str, class_nbr: str,
                info: SectionInfo, site_url: str, sender: str, unsubscribe_secret: str,
                now: float | None = None) -> dict:
    """The Resend send parameters for one watcher and one change (EmailComposer, for one)."""
    return EmailComposer(kind, term=term, class_nbr=class_nbr, info=info, site_url=site_url,
                         sender=sender, unsubscribe_secret=unsubscribe_secret,
                         now=now).email(to=to, user_id=user_id)
