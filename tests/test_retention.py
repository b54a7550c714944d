"""Retention as the site's privacy page promises: a deleted account leaves no address or user id
in this service's tables, and delivery audit rows go after SEATWATCH_AUDIT_RETENTION_DAYS (365)."""

from __future__ import annotations

from app.check.run import check_section
from app.mail import delivery

TERM, NBR, OTHER = "2261", "12430", "12431"


def run_check(services, scraper, nbr, seats):
    scraper.set_section(TERM, nbr, seats_available=seats)
    return check_section(services, TERM, nbr)


def tables_holding(sql, needle: str) -> list[str]:
    """Every table of the public schema with a row whose text contains `needle`."""
    names = [r["table_name"] for r in sql(
        """select table_name from information_schema.tables
           where table_schema = 'public' and table_type = 'BASE TABLE'""")]
    return [n for n in names
            if sql(f"select count(*) as n from public.{n} t where t::text ilike %s",
                   (f"%{needle}%",))[0]["n"]]


def test_a_deleted_account_leaves_no_address_or_user_id_after_one_sweep(
        services, scraper, resend_server, make_watch, sql):
    gone, gone_watch = make_watch("gone@asu.edu", NBR)
    make_watch("stays@asu.edu", NBR)
    sql("""insert into class_watches (user_id, term, subject, catalog_nbr, class_nbr)
           values (%s, %s, 'CSE', '110', %s)""", (gone, TERM, OTHER))
    for nbr in (NBR, OTHER):
        run_check(services, scraper, nbr, 0)
    assert run_check(services, scraper, NBR, 2).delivered == 2  # audit rows with addresses
    resend_server.api_key = "re_rotated"  # 403: a batch waits with its payload
    assert run_check(services, scraper, OTHER, 1).delivered == 0
    # A row written before this service kept user ids (migration 0006 could not match it).
    sql("""insert into notification_deliveries (batch_key, position, recipient, notification_type)
           values ('seatwatch-legacy', 0, 'gone@asu.edu', 'seat_available')""")
    assert "notification_deliveries" in tables_holding(sql, "gone@asu.edu")
    sql("delete from auth.users where id = %s", (gone,))
    delivery.sweep(services, grace_seconds=0)
    assert tables_holding(sql, "gone@asu.edu") == []
    assert tables_holding(sql, gone) == []
    # Other students' rows stay, and so do the anonymous facts of the deleted one's emails.
    assert tables_holding(sql, "stays@asu.edu") == ["notification_deliveries"]
    assert sql("select count(*) as n from notification_deliveries where recipient is null")[0]["n"] >= 2


def test_audit_rows_past_the_retention_are_deleted_by_a_sweep(
        services, scraper, resend_server, make_watch, sql):
    make_watch("old@asu.edu", NBR)
    make_watch("new@asu.edu", OTHER)
    for nbr in (NBR, OTHER):
        run_check(services, scraper, nbr, 0)
        assert run_check(services, scraper, nbr, 1).delivered == 1
    old_batch = sql("select batch_key from notification_deliveries where recipient = 'old@asu.edu'")[0]["batch_key"]
    sql("update notification_deliveries set created_at = now() - interval '366 days' where batch_key = %s", (old_batch,))
    sql("update delivery_batches set created_at = now() - interval '366 days' where batch_key = %s", (old_batch,))
    out = delivery.sweep(services, grace_seconds=0)
    assert out["retention"]["deleted"] == 1
    assert sql("select recipient from notification_deliveries") == [{"recipient": "new@asu.edu"}]
    assert [r["batch_key"] for r in sql("select batch_key from delivery_batches")] != [old_batch]
    assert sql("select count(*) as n from delivery_batches where batch_key = %s", (old_batch,)) == [{"n": 0}]
