"""Migrations are idempotent, and the fixed claim works again after expiry (the old one did not)."""

from __future__ import annotations

from app import db
from app.db import migrations, watches


def test_migrate_twice_changes_nothing(database):
    assert migrations.migrate(database, bootstrap=True) == []


def test_claims_allow_a_new_notification_once_the_old_one_expired(services, make_watch, sql):
    _, watch = make_watch("a@asu.edu", "12430")
    claim = "select public.try_record_notification(%s, 'seat_available') as ok"
    assert sql(claim, (watch,)) == [{"ok": True}]
    assert sql(claim, (watch,)) == [{"ok": False}]  # live: no duplicate
    sql("update notifications_sent set expires_at = now() - interval '1 minute'")
    assert sql(claim, (watch,)) == [{"ok": True}]  # the running version answered false forever here
    assert sql("select count(*) as n from notifications_sent") == [{"n": 1}]


def test_stagger_groups_split_by_last_digit(services, make_watch, sql):
    for nbr in ("12430", "12431", "12438", "12439"):
        make_watch(f"{nbr}@asu.edu", nbr)
    with db.transaction(services.pool) as conn:
        even = watches.sections_to_check(conn, "even")
        odd = watches.sections_to_check(conn, "odd")
        every = watches.sections_to_check(conn, "all")
    assert sorted(n for _, n in even) == ["12430", "12438"]
    assert sorted(n for _, n in odd) == ["12431", "12439"]
    assert len(every) == 4
