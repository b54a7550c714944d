"""Emails and unsubscribe tokens in the formats the running site expects.

The HTML is parsed (html.parser), not grepped: each element students know is found by its place
in the document, and hostile scraper values must come out as text, never as markup.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest

from app.mail.build import build_email
from app.mail.unsubscribe import make_token, verify_token
from app.section import Change, SectionInfo

SITE = "https://s.example"
INFO = SectionInfo(subject="CSE", catalog_nbr="110", title="<script>alert(1)</script> & more",
                   instructor="O'Brien <b>", seats_available=3, seats_capacity=40,
                   non_reserved_seats=None, location="BYENG", meeting_times="MW")
KNOWN = dataclasses.replace(INFO, title="Principles of Programming", instructor="Zoë Núñez",
                            non_reserved_seats=1, location='Tempe "BYENG" 210',
                            meeting_times="MW 10:30AM")


class Doc(HTMLParser):
    """Text by class attribute, every tag seen, links, the <title> and the <h1>."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag not in ("meta", "br", "hr"):
            self._open.append((tag, attrs.get("class")))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for tag, cls in self._open:
            for key in filter(None, (tag, cls)):
                self.text[key] = self.text.get(key, "") + data

    def get(self, key: str) -> str | None:
        value = self.text.get(key)
        return " ".join(value.split()) if value is not None else None

    def links(self, cls: str) -> list[str]:
        return [a["href"] for t, a in self.tags if t == "a" and a.get("class") == cls]


def email(kind=Change.SEAT_AVAILABLE, info=INFO, class_nbr="12431", now=0):
    return build_email(kind, to="a@asu.edu", user_id="user-1", term="2261", class_nbr=class_nbr,
                       info=info, site_url=SITE, sender="x@s.example", unsubscribe_secret="k", now=now)


def test_token_format_matches_the_site():
    token = make_token("user-1", "secret", now=1_000_000)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    user, expires, signature = raw.split(":")
    assert user == "user-1" and int(expires) == (1_000_000 + 90 * 86400) * 1000
    assert signature == hmac.new(b"secret", f"user-1:{expires}".encode(), hashlib.sha256).hexdigest()
    assert "=" not in token and "+" not in token and "/" not in token
    assert verify_token(token, "secret", now=1_000_000) == "user-1"
    assert verify_token(token, "other-secret", now=1_000_000) is None
    assert verify_token(token, "secret", now=1_000_000 + 91 * 86400) is None


def common_elements(doc: Doc, e: dict, info: SectionInfo):
    """What both emails share: head, card title, section row, button, footer, unsubscribe."""
    assert ("meta", {"charset": "utf-8"}) in doc.tags
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in doc.tags)
    assert doc.get("h2") == f"CSE 110: {info.title}"
    assert doc.get("row-section") == "Section: 12431"
    [button] = doc.links("button")
    assert doc.get("button") == "View Class on ASU Catalog"
    link = urlsplit(button)
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{SITE}/go/asu"
    assert parse_qs(link.query) == {"classNbr": ["12431"], "term": ["2261"]}
    footer = doc.get("footer")
    assert "because you're watching this class" in footer and "automated notification" in footer
    [unsubscribe] = doc.links("unsubscribe")
    assert doc.get("unsubscribe") == "Unsubscribe"
    assert e["headers"]["List-Unsubscribe"] == f"<{unsubscribe}>"
    token = parse_qs(urlsplit(unsubscribe).query)["token"][0]
    assert unsubscribe.startswith(f"{SITE}/api/unsubscribe?") and verify_token(token, "k", now=0) == "user-1"
    assert e["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The text part carries the same facts, unescaped.
    for fact in (info.title, "Section: 12431", f"{SITE}/go/asu?classNbr=12431&term=2261",
                 f"Unsubscribe: {unsubscribe}", "automated notification"):
        assert fact in e["text"], fact
    assert "<" not in e["text"].replace(info.title, "").replace(info.instructor, "")


def test_seat_email_when_the_non_reserved_count_is_unknown():
    e = email(info=INFO)
    doc = Doc(e["html"])
    common_elements(doc, e, INFO)
    assert doc.get("title") == "Seat Available - CSE 110"
    assert doc.get("h1") == "🎉 Seat Available!"
    assert "seat just became available" in doc.get("intro")
    assert doc.get("row-instructor") == "Instructor: O'Brien <b>"
    assert doc.get("row-location") == "Location: BYENG" and doc.get("row-meeting-times") == "Meeting Times: MW"
    assert doc.get("seats") == "3 open seats available"  # seats_available: no non-reserved count
    assert doc.get("general-enrollment") is None
    assert "couldn't verify if these seats are reserved" in doc.get("reserved-warning")
    assert "check the ASU catalog" in doc.get("reserved-warning")
    assert "3 open seats available" in e["text"] and "couldn't verify" in e["text"]
    assert e["subject"] == "🎉 Seat Available: CSE 110 (12431)"


def test_seat_email_when_the_non_reserved_count_is_known():
    e = email(info=KNOWN)
    doc = Doc(e["html"])
    common_elements(doc, e, KNOWN)
    assert doc.get("seats") == "1 open seat available"  # the non-reserved count, singular
    assert "general enrollment" in doc.get("general-enrollment")
    assert "not reserved for specific majors" in doc.get("general-enrollment")
    assert doc.get("reserved-warning") is None and "couldn't verify" not in e["text"]
    assert doc.get("row-location") == 'Location: Tempe "BYENG" 210'
    assert "of 40" not in e["html"]  # never "N of M seats" in the seat email
    assert "1 open seat available" in e["text"] and "general enrollment" in e["text"]


def test_unknown_location_and_times_have_no_rows():
    bare = dataclasses.replace(KNOWN, location="", meeting_times="")
    for kind in Change.SEAT_AVAILABLE, Change.INSTRUCTOR_ASSIGNED:
        e = email(kind, info=bare)
        doc = Doc(e["html"])
        assert doc.get("row-location") is None and doc.get("row-meeting-times") is None
        assert "TBA" not in e["html"] and "Location" not in e["text"] and "Meeting Times" not in e["text"]


def test_instructor_email():
    e = email(Change.INSTRUCTOR_ASSIGNED, info=KNOWN)
    doc = Doc(e["html"])
    common_elements(doc, e, KNOWN)
    assert doc.get("title") == "Instructor Assigned - CSE 110"
    assert doc.get("h1").startswith("👨‍🏫 Instructor Assigned")
    assert "instructor has been assigned" in doc.get("intro")
    assert doc.get("row-instructor") == "Instructor: Zoë Núñez"
    assert doc.get("seats") == "3 of 40 seats available"  # seats available, not the non-reserved 1
    assert doc.get("reserved-warning") is None
    assert e["subject"] == "👨‍🏫 Instructor Assigned: CSE 110 (12431)"
    assert "Instructor: Zoë Núñez" in e["text"] and "3 of 40 seats available" in e["text"]


@pytest.mark.parametrize("kind", [Change.SEAT_AVAILABLE, Change.INSTRUCTOR_ASSIGNED])
def test_hostile_values_are_escaped(kind):
    hostile = SectionInfo(subject='C"SE', catalog_nbr="<i>110", title="<script>alert(1)</script> & more",
                          instructor="O'Brien <img src=x onerror=alert(2)>", seats_available=3,
                          seats_capacity=40, non_reserved_seats=None,
                          location='"><a href="https://evil.example">', meeting_times="Ünïcødé ✓ 10–11")
    e = email(kind, info=hostile)
    html = e["html"]
    for raw in ("<script>", "<img", "<i>", 'href="https://evil.example"', '"><a'):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "O&#39;Brien &lt;img src=x onerror=alert(2)&gt;" in html
    assert "C&#34;SE" in html and "&lt;i&gt;110" in html
    doc = Doc(html)
    # Parsed back, the values are the scraper's text exactly: escaped, not mangled.
    assert doc.get("h2") == 'C"SE <i>110: <script>alert(1)</script> & more'
    assert doc.get("row-location") == 'Location: "><a href="https://evil.example">'
    assert doc.get("row-meeting-times") == "Meeting Times: Ünïcødé ✓ 10–11"
    assert [t for t, _ in doc.tags].count("a") == 2  # the button and the unsubscribe link only
    assert "<script>alert(1)</script> & more" in e["text"]


def test_building_is_deterministic_for_a_given_time():
    assert email(now=5) == email(now=5)
    assert email(now=5)["html"] != email(now=6)["html"]  # the token's expiry moves with time


def test_preview_command_writes_both_emails(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app", "preview-emails", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env={"PATH": ""})
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"seat_available.html", "seat_available.txt", "instructor_assigned.html",
            "instructor_assigned.txt"} <= set(names)
    assert set(done.stdout.split()) == {str(tmp_path / n) for n in names}
    seat = Doc((tmp_path / "seat_available.html").read_text(encoding="utf-8"))
    assert seat.get("h1") == "🎉 Seat Available!" and seat.links("button")
    assert "Instructor Assigned" in (tmp_path / "instructor_assigned.txt").read_text(encoding="utf-8")


def rendered_per_recipient(kind, info, *, to, user_id, site_url, now):
    """An email as it was built before issue 20: both templates rendered for this recipient."""
    from urllib.parse import urlencode

    from app.mail.build import SUBJECTS, render, template_values

    unsubscribe = f"{site_url}/api/unsubscribe?{urlencode({'token': make_token(user_id, 'k', now)})}"
    class_link = f"{site_url}/go/asu?{urlencode({'classNbr': '12431', 'term': '2261'})}"
    html, text = render(kind, template_values(kind, term="2261", class_nbr="12431", info=info,
                                              class_link=class_link, unsubscribe_url=unsubscribe))
    return {"from": "x@s.example", "to": [to],
            "subject": SUBJECTS[kind].format(subject=info.subject, catalog_nbr=info.catalog_nbr,
                                             class_nbr="12431"),
            "html": html, "text": text,
            "headers": {"List-Unsubscribe": f"<{unsubscribe}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}}


@pytest.mark.parametrize("kind", [Change.SEAT_AVAILABLE, Change.INSTRUCTOR_ASSIGNED])
@pytest.mark.parametrize("info", [INFO, KNOWN], ids=["hostile", "known"])
# a site URL with characters autoescape changes: the link in the HTML is escaped, the text's is not
@pytest.mark.parametrize("site_url", [SITE, "https://s.example/a&b=\"c'<d>"], ids=["plain", "escaped"])
def test_one_render_per_section_gives_the_bytes_of_one_render_per_recipient(kind, info, site_url):
    from app.mail.build import EmailComposer

    composer = EmailComposer(kind, term="2261", class_nbr="12431", info=info, site_url=site_url,
                             sender="x@s.example", unsubscribe_secret="k", now=1_000)
    recipients = [(f"s{i}@asu.edu", f"user-{i}") for i in range(3)]
    emails = [composer.email(to=to, user_id=uid) for to, uid in recipients]
    for (to, uid), got in zip(recipients, emails):
        assert got == rendered_per_recipient(kind, info, to=to, user_id=uid, site_url=site_url, now=1_000)
    assert len({e["html"] for e in emails}) == len(recipients)  # each carries its own link
    assert all("\x00" not in e["html"] + e["text"] for e in emails)
