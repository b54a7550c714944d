"""Exactly-once email against Resend as it really answers (tests/fakes.FakeResend).

Each test counts what reached the stand-in's inbox: every eligible watcher exactly once, a bad
address exactly one recorded failure, nothing lost to a 409, a 401/403 or a slow answer.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import resend

from app import db
from app.check.run import check_section
from app.db import batches, watches
from app.health import checks
from app.mail import delivery
from app.mail.mailer import Mailer
from tests.fakes import RESEND_KEY

TERM, NBR = "2261", "12430"


@pytest.fixture
def impatient_mailer(services, resend_server, monkeypatch):
    """The real Mailer with a 1 s client timeout and no backoff sleeps, so a slow Resend outlives
    the client as it would with the production 15 s timeout."""
    services.mailer  # built now if not yet: the SDK's client is a module global the last Mailer sets
    monkeypatch.setattr(resend, "default_http_client", resend.default_http_client)
    mailer = Mailer(RESEND_KEY, resend_server.url, timeout=1, sleep=lambda s: None)
    monkeypatch.setattr(services, "mailer", mailer)
    return mailer


def open_seat(services, scraper, make_watch, emails, nbr=NBR):
    """Watchers of a full section whose seat then opens; returns the opening check's result."""
    watched = [make_watch(e, nbr) for e in emails]
    scraper.set_section(TERM, nbr, seats_available=0)
    check_section(services, TERM, nbr)
    scraper.set_section(TERM, nbr, seats_available=2)
    return check_section(services, TERM, nbr), watched


def inbox(resend_server) -> list[str]:
    return sorted(e["to"][0] for e in resend_server.emails)


def open_batches(sql) -> list[dict]:
    return sql("select * from delivery_batches where delivered_at is null and failed_at is null")


def wait_for_quiet(resend_server, timeout=10):
    deadline = time.monotonic() + timeout
    while resend_server._in_flight and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("first_attempt", ["fail", "send"])
def test_key_still_in_flight_is_retried_later_not_dropped(
        services, scraper, resend_server, make_watch, impatient_mailer, sql, first_attempt):
    """The first attempt outlives the client timeout; the retries meet 409
    concurrent_idempotent_requests. Whether Resend's first attempt then fails or goes through,
    the watcher gets exactly one email."""
    resend_server.hang_next(1, 5.0, outcome=first_attempt)  # long past the 1 s client timeout
    result, _ = open_seat(services, scraper, make_watch, ["a@asu.edu"])
    assert result.claimed == 1 and result.delivered == 0
    [batch] = open_batches(sql)
    assert batch["last_status"] == 409 and "concurrent_idempotent_requests" in batch["last_error"]
    assert sql("select count(*) as n from notification_deliveries where failed_at is not null") == [{"n": 0}]
    wait_for_quiet(resend_server)
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 1
    assert inbox(resend_server) == ["a@asu.edu"]
    assert open_batches(sql) == []


def test_hang_past_the_timeout_then_sent_is_not_sent_twice(
        services, scraper, resend_server, make_watch, impatient_mailer):
    resend_server.hang_next(1, 1.5, outcome="send")
    open_seat(services, scraper, make_watch, ["a@asu.edu", "b@asu.edu"])
    wait_for_quiet(resend_server)
    assert inbox(resend_server) == ["a@asu.edu", "b@asu.edu"]  # the hung attempt did go out
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 2  # replayed, not resent
    assert inbox(resend_server) == ["a@asu.edu", "b@asu.edu"]


def test_watch_deleted_after_a_lost_answer_resends_exactly_what_was_attempted(
        services, scraper, resend_server, make_watch, impatient_mailer, sql):
    """A batch Resend may have accepted keeps its key. Re-checked (issue 26), b's email is cancelled
    (b stopped watching) and a's goes under the same key with a different body: Resend, which had
    accepted the first attempt, answers 409 invalid_idempotent_request and sends nothing, and a's
    email is recorded delivered by that first attempt."""
    resend_server.lose_next_answers(1)
    resend_server.fail_next(3, status=502)
    result, watched = open_seat(services, scraper, make_watch, ["a@asu.edu", "b@asu.edu"])
    assert result.delivered == 0 and inbox(resend_server) == ["a@asu.edu", "b@asu.edu"]
    sql("delete from class_watches where id = %s", (watched[1][1],))  # b stops watching
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 1
    assert [r["key"] for r in resend_server.requests][-1] == resend_server.requests[0]["key"]
    assert inbox(resend_server) == ["a@asu.edu", "b@asu.edu"]  # nobody twice
    assert open_batches(sql) == []
    assert sql("select count(*) as n from notification_deliveries where failed_at is not null") == [{"n": 0}]
    [cancelled] = sql("select last_error from notification_deliveries where cancelled_at is not null")
    assert "may have accepted" in cancelled["last_error"]


def test_one_invalid_address_costs_exactly_one_email(services, scraper, resend_server, make_watch, sql):
    emails = [f"s{i}@asu.edu" for i in range(5)]
    emails.insert(2, "not an address")
    result, _ = open_seat(services, scraper, make_watch, emails)
    assert result.claimed == 6 and result.delivered == 5
    assert inbox(resend_server) == sorted(e for e in emails if "@" in e)
    assert [r["validation"] for r in resend_server.requests] == ["permissive"]
    failed = sql("select recipient, last_error from notification_deliveries where failed_at is not null")
    assert len(failed) == 1 and failed[0]["recipient"] == "not an address"
    assert "Invalid `to` field" in failed[0]["last_error"]
    assert delivery.sweep(services, grace_seconds=0) == {"batches": 0, "delivered": 0}


def test_the_stand_in_validates_strictly_by_default(services, resend_server):
    """What an unmodified client meets: one bad address fails the whole batch with 422."""
    resend.api_key, resend.api_url = RESEND_KEY, resend_server.url
    good = {"from": "a <a@example.test>", "to": ["x@asu.edu"], "subject": "s", "text": "t"}
    bad = {**good, "to": ["nope"]}
    with pytest.raises(resend.exceptions.ResendError) as err:
        resend.Batch.send([good, bad])
    assert str(err.value.code) == "422" and resend_server.emails == []


@pytest.mark.parametrize("refusal", ["rotated key", "unverified domain"])
def test_401_403_keep_emails_for_the_sweep_and_show_in_health(
        services, scraper, resend_server, make_watch, sql, refusal):
    if refusal == "rotated key":
        resend_server.api_key = "re_the_new_key"  # our key is the old one now: 403 invalid_api_key
    else:
        resend_server.unverified_domains.add("example.test")
    result, _ = open_seat(services, scraper, make_watch, ["a@asu.edu", "b@asu.edu"])
    assert result.delivered == 0 and resend_server.emails == []
    assert len(resend_server.requests) == 1  # no hammering: the sweep retries
    [batch] = open_batches(sql)
    assert batch["last_status"] == 403
    report = checks.run_checks(services)
    deliveries = report["checks"]["deliveries"]
    assert deliveries["status"] == checks.DEGRADED and "HTTP 403" in deliveries["reason"]
    assert report["status"] != checks.HEALTHY
    # The operator fixes the account; the next sweep delivers each email once.
    resend_server.api_key = RESEND_KEY
    resend_server.unverified_domains.clear()
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 2
    assert inbox(resend_server) == ["a@asu.edu", "b@asu.edu"]
    assert "refused_status" not in checks.run_checks(services)["checks"]["deliveries"]


def test_429_then_5xx_then_success_delivers_once(services, scraper, resend_server, make_watch, monkeypatch):
    slept = []
    monkeypatch.setattr(services.mailer, "sleep", slept.append)
    resend_server.fail_next(1, status=429, headers={"retry-after": "3"},
                            body={"statusCode": 429, "name": "rate_limit_exceeded", "message": "slow"})
    resend_server.fail_next(1, status=503)
    result, _ = open_seat(services, scraper, make_watch, ["a@asu.edu"])
    assert result.delivered == 1 and inbox(resend_server) == ["a@asu.edu"]
    assert slept == [3.0, 2.0]


def _make_batch(services, make_watch, size: int) -> str:
    watched = [make_watch(f"r{i}@asu.edu", NBR) for i in range(size)]
    with db.transaction(services.pool) as conn:
        ids = watches.claim_notifications(conn, [w for _, w in watched], "seat_available")
        key = f"race-{ids[0]}"
        batches.add_batch(conn, key, "seat_available", [
            (nid, {"from": "PickMyClass <alerts@example.test>", "to": [f"r{i}@asu.edu"],
                   "subject": "s", "text": "t"}) for i, nid in enumerate(ids)])
    return key


def test_two_senders_never_split_a_batch(services, resend_server, make_watch, sql):
    """A check's own send and the sweep racing over one 100-email batch: one request of 100."""
    for _ in range(8):
        sql("truncate auth.users, delivery_batches cascade")
        resend_server.reset()
        key = _make_batch(services, make_watch, 100)
        barrier = threading.Barrier(2)
        delivered = []

        def sender():
            barrier.wait()
            delivered.append(delivery.deliver_batch(services, key))

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(delivered) == [0, 100]
        assert [r["count"] for r in resend_server.requests] == [100]
        assert len(resend_server.emails) == 100 and len(set(inbox(resend_server))) == 100


def test_no_transaction_is_open_while_resend_answers(services, resend_server, make_watch, sql, database):
    """During a slow send, no connection of ours sits in a transaction, and a concurrent
    'seats filled' clear of the section's notifications does not wait for the send."""
    key = _make_batch(services, make_watch, 3)
    resend_server.hang_next(1, 2.0, outcome="send")
    sender = threading.Thread(target=delivery.deliver_batch, args=(services, key))
    sender.start()
    deadline = time.monotonic() + 5
    while not resend_server._in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert resend_server._in_flight, "the send never started"
    idle_in_tx = sql("""select count(*) as n from pg_stat_activity
                        where datname = current_database() and application_name = 'seatwatch'
                          and state like 'idle in transaction%%'""")
    assert idle_in_tx == [{"n": 0}]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("set lock_timeout = '500ms'")
        started = time.monotonic()
        conn.execute("""delete from notifications_sent ns using class_watches cw
                        where ns.class_watch_id = cw.id and cw.class_nbr = %s""", (NBR,))
        assert time.monotonic() - started < 0.5
    sender.join(10)
    assert len(resend_server.emails) == 3  # the attempted batch went as attempted
    assert open_batches(sql) == []


def test_sweep_survives_a_failing_batch(services, resend_server, make_watch, monkeypatch, sql):
    first = _make_batch(services, make_watch, 1)
    with db.transaction(services.pool) as conn:
        _, watch = make_watch("other@asu.edu", "12432")
        [nid] = watches.claim_notifications(conn, [watch], "seat_available")
        batches.add_batch(conn, "second", "seat_available", [(nid, {"from": "PickMyClass <alerts@example.test>",
                                             "to": ["other@asu.edu"], "subject": "s", "text": "t"})])
    real_send = services.mailer.send_batch

    def send(emails, key):
        if key == first:
            raise RuntimeError("a bug in one batch")
        return real_send(emails, key)

    monkeypatch.setattr(services.mailer, "send_batch", send)
    out = delivery.sweep(services, grace_seconds=0)
    assert out["delivered"] == 1 and out["errors"] == 1
    assert inbox(resend_server) == ["other@asu.edu"]


def test_two_sweeps_never_run_at_once(services, resend_server, make_watch):
    _make_batch(services, make_watch, 1)
    resend_server.hang_next(1, 1.5, outcome="send")
    results = []
    first = threading.Thread(target=lambda: results.append(delivery.sweep(services, grace_seconds=0)))
    first.start()
    deadline = time.monotonic() + 5
    while not resend_server._in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    second = delivery.sweep(services, grace_seconds=0)
    first.join(10)
    assert second.get("skipped") is True
    assert results == [{"batches": 1, "delivered": 1}]
    assert delivery.sweep(services, grace_seconds=0) == {"batches": 0, "delivered": 0}


def test_payloads_are_pruned_after_a_day_but_the_audit_row_stays(
        services, scraper, resend_server, make_watch, sql):
    open_seat(services, scraper, make_watch, ["a@asu.edu"])
    [row] = sql("select payload, recipient, resend_id, delivered_at from notification_deliveries")
    assert row["payload"] is None  # delivered: it can never be resent, so it is not kept
    assert row["recipient"] == "a@asu.edu" and row["resend_id"] and row["delivered_at"]
    # An undelivered batch keeps its payload for Resend's window, then loses it.
    resend_server.fail_next(4, status=503)
    scraper.set_section(TERM, NBR, seats_available=0)
    check_section(services, TERM, NBR)
    scraper.set_section(TERM, NBR, seats_available=4)
    services.mailer.sleep = lambda s: None
    check_section(services, TERM, NBR)
    sql("update notification_deliveries set created_at = now() - interval '25 hours' where payload is not null")
    sql("update delivery_batches set created_at = now() - interval '25 hours'")
    delivery.sweep(services, grace_seconds=0)
    assert sql("select count(*) as n from notification_deliveries where payload is not null") == [{"n": 0}]
    assert sql("select count(*) as n from delivery_batches where payload is not null") == [{"n": 0}]
    # Both audit rows outlive their claims (seats filled cleared the first one's claim).
    audit = sql("select recipient, notification_type, notification_id from notification_deliveries")
    assert [(r["recipient"], r["notification_type"]) for r in audit] == [("a@asu.edu", "seat_available")] * 2
    assert sum(r["notification_id"] is None for r in audit) == 1


def test_pool_recovers_from_a_database_restart(services, sql):
    """A connection the server dropped (restart, pooler recycle) is replaced, not handed out."""
    with db.transaction(services.pool) as conn:
        conn.execute("select 1")
    sql("""select pg_terminate_backend(pid) from pg_stat_activity
           where datname = current_database() and application_name = 'seatwatch'""")
    with db.transaction(services.pool) as conn:
        assert conn.execute("select 1 as one").fetchone() == {"one": 1}


def test_a_batch_never_sent_within_the_window_is_given_up_not_left_pending(
        services, make_watch, resend_server, sql):
    _make_batch(services, make_watch, 2)
    sql("update delivery_batches set created_at = now() - interval '23 hours 30 minutes'")
    assert delivery.sweep(services, grace_seconds=0)["delivered"] == 0
    assert resend_server.requests == []
    rows = sql("select failed_at, last_error from notification_deliveries")
    assert len(rows) == 2 and all(r["failed_at"] and "idempotency window" in r["last_error"] for r in rows)
    with db.transaction(services.pool) as conn:
        assert batches.delivery_counts(conn)["pending"] == 0
