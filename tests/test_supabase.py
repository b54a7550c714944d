"""The database as Supabase has it: RLS and default grants, and its transaction pooler.

The pooler is PgBouncer in transaction mode (scripts/services.sh, 127.0.0.1:6543, a server pool
of 4 shared with other clients): the flows production runs through Supabase's 6543 run through it.
"""

from __future__ import annotations

import dataclasses
import threading

import psycopg
import pytest
from psycopg import errors

from app.check.run import check_section
from app.db import migrations
from app.health import checks
from app.mail import delivery
from app.services import Services
from tests.conftest import PGBOUNCER_DSN

# Every table this service creates (migrations and the migrator's own table).
OWN_TABLES = ("notification_deliveries", "delivery_batches", "seatwatch_section_states",
              "seatwatch_migrations", "seatwatch_handover")


def test_every_public_table_has_row_level_security(services, sql):
    rows = sql("""select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity""")
    assert rows == []


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("table", OWN_TABLES)
def test_public_api_roles_cannot_read_or_write_our_tables(services, scraper, resend_server, make_watch,
                                                          database, role, table):
    # Some data to protect: a delivered and an undelivered email.
    make_watch("a@asu.edu", "12430")
    scraper.set_section("2261", "12430", seats_available=0)
    check_section(services, "2261", "12430")
    resend_server.fail_next(4, status=503)
    services.mailer.sleep = lambda s: None
    scraper.set_section("2261", "12430", seats_available=3)
    check_section(services, "2261", "12430")

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"set role {role}")
        attempts = {
            "select": f"select * from public.{table}",
            "insert": f"insert into public.{table} default values",
            "update": "update public.{0} set {1} = {1}".format(table, _first_column(conn, table, role)),
            "delete": f"delete from public.{table}",
        }
        for what, statement in attempts.items():
            try:
                cur = conn.execute(statement)
            except (errors.InsufficientPrivilege, errors.NotNullViolation) as exc:
                # permission denied, or (insert) RLS refusing the row, or a NOT NULL the row never
                # got as far as: nothing was read or written either way
                assert "permission denied" in str(exc) or "row-level security" in str(exc) or \
                    isinstance(exc, errors.NotNullViolation), exc
                continue
            rows = cur.fetchall() if cur.description else []
            assert rows == [] and cur.rowcount in (0, -1), f"{role} could {what} {table}"


def _first_column(conn, table: str, role: str) -> str:
    conn.execute("reset role")
    name = conn.execute("""select attname from pg_attribute
                           where attrelid = %s::regclass and attnum = 1""",
                        (f"public.{table}",)).fetchone()[0]
    conn.execute(f"set role {role}")
    return name


def test_public_api_roles_cannot_claim_notifications(services, database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("set role anon")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select public.claim_notification(gen_random_uuid(), 'seat_available')")


@pytest.fixture
def pooled(services):
    """The process's services, but talking to PostgreSQL through the transaction-mode pooler."""
    settings = dataclasses.replace(services.settings, database_url=PGBOUNCER_DSN)
    svc = Services(settings)
    svc.mailer = services.mailer
    yield svc
    svc.pool.close()


@pytest.fixture
def busy_pooler():
    """Other clients sharing the pooler's server connections, as the site does on Supabase."""
    stop = threading.Event()

    def chatter():
        with psycopg.connect(PGBOUNCER_DSN, autocommit=True, prepare_threshold=None) as conn:
            while not stop.is_set():
                conn.execute("select pg_sleep(0.01)")

    threads = [threading.Thread(target=chatter, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(5)


def test_migrate_twice_through_the_transaction_pooler(services, busy_pooler):
    """A session advisory lock taken and released through a transaction pooler can land on two
    server connections and stay held: the next migrate would hang. Ours does not."""
    for _ in range(2):
        assert migrations.migrate(PGBOUNCER_DSN, lock_wait_seconds=10) == []


def test_a_held_migration_lock_fails_with_a_clear_error(services, database):
    with psycopg.connect(database) as holder:
        holder.execute("select pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK,))
        with pytest.raises(migrations.MigrationLockTimeout, match="another migration"):
            migrations.migrate(PGBOUNCER_DSN, lock_wait_seconds=1)


def test_check_email_sweep_and_health_through_the_transaction_pooler(
        pooled, scraper, resend_server, make_watch, sql, busy_pooler):
    for i in range(3):
        make_watch(f"s{i}@asu.edu", "12430")
    scraper.set_section("2261", "12430", seats_available=0)
    assert check_section(pooled, "2261", "12430").baseline
    resend_server.fail_next(4, status=503)
    pooled.mailer.sleep = lambda s: None
    scraper.set_section("2261", "12430", seats_available=1)
    assert check_section(pooled, "2261", "12430").claimed == 3
    assert delivery.sweep(pooled, grace_seconds=0) == {"batches": 1, "delivered": 3}
    assert sorted(e["to"][0] for e in resend_server.emails) == ["s0@asu.edu", "s1@asu.edu", "s2@asu.edu"]
    pooled.heartbeat.beat()
    report = checks.run_checks(pooled)
    assert report["checks"]["database"]["status"] == checks.HEALTHY, report["checks"]["database"]
    assert report["checks"]["deliveries"]["pending"] == 0
