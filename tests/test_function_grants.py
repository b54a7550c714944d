"""EXECUTE on this service's functions: the roles that call them only (migration 0007, issue 18).

The functions are read from the migrations' own text, so one added later is held to the same rule
without anyone remembering to list it here. `try_record_notification` is the site's function that
migration 0002 replaced: it keeps the site's contract (supabase/migrations/
20251030000000_add_atomic_notification_check.sql in Divkix/pickmyclass), called as the site calls
it (lib/db/queries.ts: `supabase.rpc('try_record_notification', {p_class_watch_id,
p_notification_type, p_expires_hours})` with the service-role key, 24 hours by default).
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

MIGRATIONS = Path(__file__).resolve().parent.parent / "app" / "db" / "sql" / "migrations"
CREATES_FUNCTION = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?function\s+([\w.]+)\s*\(", re.I)
# The one function of ours another role calls: the site, with its service-role key.
CALLERS = {"public.try_record_notification": {"service_role"}}
API_ROLES = ("anon", "authenticated", "service_role")


def own_functions() -> set[str]:
    names = set()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        for name in CREATES_FUNCTION.findall(path.read_text()):
            names.add(name.lower() if "." in name else f"public.{name.lower()}")
    return names


@pytest.fixture
def functions(services, sql):
    """Every overload of every function the migrations create or replace, as regprocedure text."""
    names = own_functions()
    rows = sql("""select n.nspname || '.' || p.proname as name, p.oid::regprocedure::text as sig
                  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                  where n.nspname || '.' || p.proname = any(%s)""", (list(names),))
    assert {r["name"] for r in rows} == names  # each one exists in the migrated database
    return rows


def test_the_migrations_name_the_functions_we_replace():
    assert {"public.claim_notification", "public.try_record_notification"} <= own_functions()


@pytest.mark.parametrize("role", API_ROLES)
def test_api_roles_execute_only_what_they_call(functions, sql, role):
    allowed = {r["sig"] for r in functions if role in CALLERS.get(r["name"], ())}
    can = {r["sig"] for r in functions
           if sql("select has_function_privilege(%s, %s::regprocedure, 'execute') as ok",
                  (role, r["sig"]))[0]["ok"]}
    assert can == allowed


def test_public_holds_execute_on_none_of_them(functions, sql):
    # A NULL ACL is the default one, which grants EXECUTE to PUBLIC (grantee 0).
    public = sql("""select p.oid::regprocedure::text as sig
                    from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                    where p.oid::regprocedure::text = any(%s) and a.grantee = 0""",
                 ([r["sig"] for r in functions],))
    assert public == []


def test_try_record_notification_keeps_the_sites_security_settings(sql):
    [row] = sql("""select prosecdef, proconfig from pg_proc
                   where oid = 'public.try_record_notification(uuid, text, integer)'::regprocedure""")
    assert row == {"prosecdef": True, "proconfig": ["search_path=public"]}


@pytest.fixture
def as_site(services, database):
    """A connection that calls as the site does: the service_role, named arguments."""
    conn = psycopg.connect(database, autocommit=True, row_factory=dict_row)
    conn.execute("set role service_role")

    def record(watch_id, kind: str = "seat_available", hours: int | None = None) -> bool:
        hours_arg = "" if hours is None else ", p_expires_hours => %(h)s"
        return conn.execute(
            "select public.try_record_notification(p_class_watch_id => %(w)s, "
            f"p_notification_type => %(t)s{hours_arg}) as ok",
            {"w": watch_id, "t": kind, "h": hours}).fetchone()["ok"]

    yield record
    conn.close()


def test_the_sites_calls_behave_as_the_site_expects(as_site, make_watch, sql):
    _, watch = make_watch("a@asu.edu", "12430")
    assert as_site(watch) is True  # recorded: safe to send
    assert as_site(watch) is False  # already sent and not expired: skip
    [row] = sql("select expires_at - sent_at as ttl from notifications_sent")
    assert row["ttl"].total_seconds() == 24 * 3600  # the site's default
    assert as_site(watch, "instructor_assigned", hours=168) is True  # a week: the site's maximum
    sql("update notifications_sent set expires_at = now() - interval '1 minute'")
    assert as_site(watch) is True  # expired: may notify again (the fix of migration 0002)


@pytest.mark.parametrize("kind, hours, message", [
    ("seat_available", 0, "Invalid p_expires_hours: 0. Must be between 1 and 168"),
    ("seat_available", 169, "Invalid p_expires_hours: 169. Must be between 1 and 168"),
    ("seat_available", -5, "Invalid p_expires_hours: -5. Must be between 1 and 168"),
    ("waitlist_open", 24, "Invalid notification_type: waitlist_open. Must be seat_available or "
                          "instructor_assigned"),
])
def test_the_sites_argument_checks_still_refuse(as_site, make_watch, sql, kind, hours, message):
    _, watch = make_watch("a@asu.edu", "12430")
    with pytest.raises(errors.RaiseException, match=re.escape(message)):
        as_site(watch, kind, hours=hours)
    assert sql("select count(*) as n from notifications_sent") == [{"n": 0}]
