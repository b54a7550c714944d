"""A batch's emails are JSON-encoded once (issue 30): the bytes stored are the bytes of the first
send, and any later send of the frozen batch (decoded from jsonb, encoded again) sends the very
same bytes, so Resend's idempotency key replays instead of refusing. Real PostgreSQL and the
stand-in Resend (which compares bodies byte for byte)."""

from __future__ import annotations

import json

from app import db
from app.check.run import check_section
from app.db import batches, watches
from app.mail import transport
from app.mail.build import EmailComposer
from app.section import Change, SectionInfo

TERM, NBR = "2261", "12430"


def test_what_is_stored_encodes_to_the_bytes_a_later_send_encodes(services, make_watch, sql):
    info = SectionInfo(subject="CSE", catalog_nbr="110", title="Introducción à la programmation — ß",
                       instructor="Zoë Ñúñez", seats_available=2, seats_capacity=30,
                       non_reserved_seats=None, location="Tempe – Coor", meeting_times="MW 9:00")
    composer = EmailComposer(Change.SEAT_AVAILABLE, term=TERM, class_nbr=NBR, info=info,
                             site_url="https://example.test", sender="Señal <a@example.test>",
                             unsubscribe_secret="s")
    made = [make_watch(f"w{i}@asu.edu", NBR) for i in range(3)]
    with db.transaction(services.pool) as conn:
        nids = watches.claim_notifications(conn, [w for _, w in made], "seat_available")
        encoded = batches.add_batch(conn, "k1", "seat_available", [
            (nid, composer.email(to=f"w{i}@asu.edu", user_id=str(i))) for i, nid in enumerate(nids)])
        ids, emails = batches.freeze_batch(conn, "k1", encoded)
    assert emails is encoded and len(ids) == 3  # nothing cancelled: not decoded, not encoded again
    [stored] = sql("select payload from delivery_batches where batch_key = 'k1'")
    assert json.dumps(stored["payload"]).encode() == encoded.body  # a retry's bytes: the same
    assert list(encoded) == stored["payload"]  # and read as dicts, the same emails


def test_a_cancelled_email_makes_the_first_send_encode_what_is_left(services, make_watch, sql):
    made = [make_watch(f"w{i}@asu.edu", NBR) for i in range(2)]
    with db.transaction(services.pool) as conn:
        nids = watches.claim_notifications(conn, [w for _, w in made], "seat_available")
        encoded = batches.add_batch(conn, "k2", "seat_available", [
            (nid, {"to": [f"w{i}@asu.edu"]}) for i, nid in enumerate(nids)])
        conn.execute("update notification_deliveries set notification_id = null where position = 0")
        ids, emails = batches.freeze_batch(conn, "k2", encoded)
    assert len(ids) == 1 and emails == [{"to": ["w1@asu.edu"]}]


def test_a_notifying_check_sends_the_stored_bytes_without_encoding_them_again(
        services, scraper, resend_server, make_watch, monkeypatch):
    for i in range(3):
        make_watch(f"w{i}@asu.edu", NBR)
    scraper.set_section(TERM, NBR, seats_available=0, instructor="Zoë Ñúñez")
    check_section(services, TERM, NBR)
    stored, sent = [], []
    add, request = batches.add_batch, transport.BoundedClient.request
    monkeypatch.setattr(batches, "add_batch", lambda *a, **k: stored.append(add(*a, **k)) or stored[-1])
    monkeypatch.setattr(transport.BoundedClient, "request",
                        lambda self, method, url, body=None, **k: (
                            "/emails/batch" in url and sent.append(body)) or request(self, method, url, body=body, **k))
    scraper.set_section(TERM, NBR, seats_available=2, instructor="Zoë Ñúñez")
    result = check_section(services, TERM, NBR)
    assert result.delivered == 3 and len(resend_server.emails) == 3
    [encoded], [body] = stored, sent
    assert body is encoded.body  # the client sent the bytes encoded when the batch was stored
