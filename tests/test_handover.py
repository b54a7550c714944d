"""The hand-over from the old Workers (issue 25), against real Redis and PostgreSQL.

The old Worker is stood in for by what it does to the shared database: its check of a section
calls the scraper (the stand-in counts calls), reads the site's class_states row, claims through
try_record_notification when a seat opened, and upserts class_states with last_checked_at (the
site's process-section route; it never sets last_changed_at, which the trigger moves only on a
change). It writes nothing to this service's Redis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import urllib.request

import psycopg
import pytest

from app import tasks
from app.__main__ import main
from app.alerting.alerts import Alerts
from app.health import checks
from app.health.view import public_view
from app.laptop import cutover
from app.queue.instance import huey
from app.schedule import catchup, cron
from app.schedule import status as schedule_status
from tests.capture import CaptureServer
from tests.fakes import SCRAPER_TOKEN

TERM = "2261"
EVEN, ODD = ("12430", "12432"), ("12431",)
HISTORY = dt.timedelta(hours=2)  # the old system has checked these sections for months


def clear_of_slot_boundaries() -> dt.datetime:
    """Now, at least 60 s away from a :00 or :30 boundary: the old Worker's checks made after this
    moment fall in the same slot as this moment (a test straddling a boundary would not). The
    ticks of a test stay within 40 s of it for the same reason."""
    while True:
        now = dt.datetime.now(dt.timezone.utc)
        into = (now.minute % 30) * 60 + now.second
        if 60 <= into <= 30 * 60 - 60:
            return now
        time.sleep(5)


@pytest.fixture
def old_system(services, make_watch, scraper, sql):
    """Watched sections with months of old-Worker history: class_states rows checked 2 h ago, and
    this service's own records as migration 0004 seeds them on a first deploy (from class_states)."""
    for nbr in EVEN + ODD:
        make_watch(f"w{nbr}@asu.edu", nbr, term=TERM)
        scraper.set_section(TERM, nbr, seats_available=0)
        sql("""insert into public.class_states (term, subject, catalog_nbr, class_nbr, seats_available,
                                                 instructor_name, last_checked_at, last_changed_at)
               values (%s, 'CSE', '110', %s, 0, 'Staff', now() - %s, now() - %s)""",
            (TERM, nbr, HISTORY, HISTORY))
        sql("""insert into public.seatwatch_section_states (term, class_nbr, seats_available, instructor_name,
                                                            scraped_at, changed_at)
               values (%s, %s, 0, 'Staff', now() - %s, now() - %s)""", (TERM, nbr, HISTORY, HISTORY))
    scraper.calls.clear()
    return services


def old_worker_check(sql, scraper, term: str, class_nbr: str) -> None:
    """One check as the site's process-section route does it."""
    req = urllib.request.Request(scraper.url + "/scrape", method="POST",
                                 data=json.dumps({"sectionNumber": class_nbr, "term": term}).encode(),
                                 headers={"Authorization": f"Bearer {SCRAPER_TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        data = json.load(resp)["data"]
    old = sql("select seats_available, non_reserved_seats from public.class_states where class_nbr = %s",
              (class_nbr,))
    opened = old and (old[0]["non_reserved_seats"] if old[0]["non_reserved_seats"] is not None
                      else old[0]["seats_available"]) == 0 and (data["non_reserved_seats"]
                                                                if data["non_reserved_seats"] is not None
                                                                else data["seats_available"]) > 0
    if opened:
        for w in sql("select id from public.class_watches where class_nbr = %s and term = %s", (class_nbr, term)):
            sql("select public.try_record_notification(%s, 'seat_available')", (w["id"],))
    sql("""insert into public.class_states (term, subject, catalog_nbr, class_nbr, title, instructor_name,
                                            seats_available, seats_capacity, non_reserved_seats,
                                            location, meeting_times, last_checked_at)
           values (%(term)s, %(subject)s, %(catalog_nbr)s, %(nbr)s, %(title)s, %(instructor)s,
                   %(seats_available)s, %(seats_capacity)s, %(non_reserved_seats)s, %(location)s,
                   %(meeting_times)s, now())
           on conflict (class_nbr) do update set
               term = excluded.term, subject = excluded.subject, catalog_nbr = excluded.catalog_nbr,
               title = excluded.title, instructor_name = excluded.instructor_name,
               seats_available = excluded.seats_available, seats_capacity = excluded.seats_capacity,
               non_reserved_seats = excluded.non_reserved_seats, location = excluded.location,
               meeting_times = excluded.meeting_times, last_checked_at = excluded.last_checked_at""",
        {**data, "term": term, "nbr": class_nbr})


def old_worker_runs(sql, scraper, sections) -> None:
    for nbr in sections:
        old_worker_check(sql, scraper, TERM, nbr)


def scheduler() -> catchup.SlotRunner:
    """A fresh worker process's scheduler, as tasks wires it."""
    return catchup.SlotRunner(lambda group, now: tasks.run_cron_now(group, now=now))


def queued(q) -> list[str]:
    return sorted(q.deserialize_task(m).args[1] for m in q.storage.enqueued_items())


def run_queue(q) -> None:
    while (message := q.storage.dequeue()) is not None:
        q.execute(q.deserialize_task(message))


def calls_per_section(scraper) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, nbr in scraper.calls:
        out[nbr] = out.get(nbr, 0) + 1
    return out


def age_checks(database, by: dt.timedelta) -> None:
    """Move the database's record of checks back in time (the trigger would stamp now())."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute("update public.class_states set last_checked_at = last_checked_at - %s, "
                     "last_changed_at = last_changed_at - %s", (by, by))
        conn.execute("update public.seatwatch_section_states set scraped_at = scraped_at - %s", (by,))
        conn.execute("update public.seatwatch_handover set at = at - %s", (by,))


def owner_check(services) -> dict:
    return checks.run_checks(services)["checks"]["schedule_owner"]


def test_the_default_first_deploy_waits_while_the_old_system_runs(old_system, queue, scraper, sql, capsys):
    """The quick start's defaults (SEATWATCH_SCHEDULER on, no hand-over recorded) beside a live old
    system: no slot runs here, by the scheduler or by a manual cron call; health says why, healthy."""
    assert old_system.settings.scheduler is True  # the default
    now = clear_of_slot_boundaries()
    old_worker_runs(sql, scraper, EVEN)  # the old cron's latest even slot
    runner = scheduler()
    results = runner.tick(now)
    assert [r.get("waiting") for r in results] == ["waiting", "waiting"]
    assert queued(queue) == [] and calls_per_section(scraper) == {n: 1 for n in EVEN}
    assert main(["cron", "--group", "even"]) == 0
    assert "waiting for the hand-over" in json.loads(capsys.readouterr().out)["message"]
    assert queued(queue) == []
    assert runner.tick(now + dt.timedelta(seconds=10))[0]["waiting"] == "waiting"  # asks again each tick
    c = owner_check(old_system)
    assert c["status"] == "healthy" and c["state"] == "waiting" and c["sections_checked_outside"] == 2
    assert "make handover" in c["note"]
    # The cron check sees a scheduler that waits on purpose, not an overdue one.
    assert cron.last_runs(old_system)["even"]["waiting"] == "waiting"


def test_handing_over_after_an_old_run_reruns_nothing_and_misses_nothing(old_system, queue, scraper, sql,
                                                                       capsys):
    """The old Worker ran this hour's even slot; its cron is then turned off and the schedule handed
    over: the even slot is not run again, the odd slot (which nobody ran) runs once."""
    now = clear_of_slot_boundaries()
    old_worker_runs(sql, scraper, EVEN)
    runner = scheduler()
    runner.tick(now)  # waiting
    assert main(["handover", "--to", "vps", "--note", "test"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "running" and shown["handover"]["owner"] == "vps"

    results = {r["stagger_group"]: r for r in runner.tick(now + dt.timedelta(seconds=10))}
    assert results["even"]["sections_enqueued"] == 0 and results["even"]["sections_checked_elsewhere"] == 2
    assert results["odd"]["sections_enqueued"] == 1
    assert queued(queue) == list(ODD)
    run_queue(queue)
    assert runner.tick(now + dt.timedelta(seconds=20)) == []  # both slots settled
    assert calls_per_section(scraper) == {"12430": 1, "12432": 1, "12431": 1}  # one check each
    # A second scheduler started now (a restart) reruns nothing either: markers, then the evidence.
    assert [r.get("skipped") for r in scheduler().tick(now + dt.timedelta(seconds=30))] == [True, True]
    assert cron.run_cron(old_system, tasks.enqueue_checks, group="even", now=now, force=False)["skipped"]
    old_system.redis.delete(*old_system.redis.keys("*slot*"))  # Redis lost the markers
    again = {r["stagger_group"]: r["sections_enqueued"] for r in scheduler().tick(now + dt.timedelta(seconds=40))}
    assert again == {"even": 0, "odd": 0} and queued(queue) == []
    assert owner_check(old_system)["status"] == "healthy"


def test_a_slot_neither_system_ran_is_checked_late_once(old_system, queue, scraper, sql):
    now = clear_of_slot_boundaries()
    old_worker_runs(sql, scraper, EVEN[:1])  # the old run died after one section
    sql("insert into public.seatwatch_handover (owner, by_host) values ('vps', 'test')")
    results = {r["stagger_group"]: r for r in scheduler().tick(now)}
    assert results["even"]["sections_enqueued"] == 1 and results["even"]["sections_checked_elsewhere"] == 1
    assert queued(queue) == sorted([EVEN[1], *ODD])
    run_queue(queue)
    assert calls_per_section(scraper) == {"12430": 1, "12432": 1, "12431": 1}


@pytest.fixture
def hook():
    with CaptureServer() as server:
        yield server


def test_the_old_cron_coming_back_is_seen_alerted_and_recovers(old_system, queue, scraper, sql, database,
                                                             hook, monkeypatch, capsys):
    """After the hand-over the old Worker's cron comes back (a site push re-created the trigger):
    health degraded naming it, `status` says it and exits non-zero, one alert, cutover-check fails;
    the old cron stops: healthy again after the hour, one "recovered"."""
    now = clear_of_slot_boundaries()
    sql("insert into public.seatwatch_handover (owner, by_host) values ('vps', 'test')")
    scheduler().tick(now)
    run_queue(queue)
    age_checks(database, dt.timedelta(minutes=20))  # the hand-over's grace is behind us
    assert owner_check(old_system)["status"] == "healthy"

    old_worker_runs(sql, scraper, EVEN)  # the old cron, back
    c = owner_check(old_system)
    assert c["status"] == "degraded" and c["sections_checked_outside"] == 2
    assert c["reason"].startswith("2 section(s) checked outside this service's runs in the last hour")
    assert "is the old Workers cron still on?" in c["reason"]
    old_system.heartbeat.beat()
    report = checks.run_checks(old_system)
    assert report["status"] == "degraded", report
    anonymous = public_view(report)["checks"]["schedule_owner"]
    assert anonymous == {"status": "degraded", "state": "running",
                         "summary": "another system checks the watched sections: "
                                    "is the old Workers cron still on?"}
    rep = schedule_status.report(old_system, huey.storage.queue_key)
    assert rep["status"] == "degraded" and "checked outside" in rep["reason"]
    table = schedule_status.format_table(rep, "CLOSED")
    assert "schedule: running: 2 section(s) checked outside" in table and "2261/12430 at " in table
    assert main(["handover"]) == 1
    capsys.readouterr()

    # cutover-check's verdict on the anonymous report fails on it, naming it.
    monkeypatch.setattr(cutover, "_request", lambda host, domain, path, method="GET", headers=None: (
        (503, json.dumps(public_view(report)).encode()) if path == cutover.HEALTH else (401, b"")))
    results = {r.name: r for r in cutover.check_http("203.0.113.10", "api.example", 330)}
    assert not results["schedule"].ok and "old Workers cron" in results["schedule"].detail

    settings = dataclasses.replace(old_system.settings, alert_urls=(hook.url + "/hook",), alert_after=60.0)
    monkeypatch.setattr(old_system, "settings", settings)
    old_system.heartbeat.beat()
    clock = [time.time()]
    watcher = Alerts(old_system, clock=lambda: clock[0])
    sent = []
    for _ in range(3):  # within one slot: the alert waits SEATWATCH_ALERT_AFTER_SECONDS, then goes
        sent += watcher.tick() or []
        clock[0] += 70
    assert [e["event"] for e in sent] == ["alert"]
    [alert] = [r["json"] for r in hook.to("/hook")]
    assert "schedule_owner" in alert["failing"]

    age_checks(database, dt.timedelta(minutes=61))  # the old cron stopped an hour ago
    old_system.heartbeat.beat()
    for _ in range(2):
        sent += watcher.tick() or []
        clock[0] += 70
    assert [e["event"] for e in sent] == ["alert", "recovered"]
    assert owner_check(old_system)["status"] == "healthy"


def test_the_sites_own_lookups_are_not_a_second_scheduler(old_system, sql):
    """Adding a watch and fetching a class's details write class_states too, with last_changed_at
    set alongside last_checked_at: not a check by another scheduler."""
    sql("insert into public.seatwatch_handover (owner, by_host) values ('vps', 'test')")
    sql("update public.seatwatch_handover set at = at - interval '30 minutes'")
    for nbr in EVEN + ODD:
        sql("""insert into public.class_states (term, subject, catalog_nbr, class_nbr, seats_available,
                                                 last_checked_at, last_changed_at)
               values (%s, 'CSE', '110', %s, 4, now(), now())
               on conflict (class_nbr) do update set seats_available = excluded.seats_available,
                   last_checked_at = excluded.last_checked_at, last_changed_at = excluded.last_changed_at""",
            (TERM, nbr))
    c = owner_check(old_system)
    assert c["status"] == "healthy" and c["sections_checked_outside"] == 0


def test_handed_back_and_nothing_checking_is_degraded(old_system, queue, sql, capsys):
    """Rolled back to the old system (`handover --to old`), which then checks nothing: seen within
    70 minutes, not silent."""
    assert main(["handover", "--to", "old"]) == 1  # recorded, and says at once that nothing checks
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "handed-back" and shown["problem"].startswith("no section checked")
    results = scheduler().tick(clear_of_slot_boundaries())
    assert {r["waiting"] for r in results} == {"handed-back"} and queued(queue) == []
    c = owner_check(old_system)  # the old checks are 2 h old: nothing checks
    assert c["status"] == "degraded" and c["reason"].startswith("no section checked for over 70 min")


def test_a_new_service_without_an_old_system_runs_at_once(services, make_watch, queue, sql):
    make_watch("a@asu.edu", "12430")
    results = scheduler().tick(clear_of_slot_boundaries())
    assert sum(r["sections_enqueued"] for r in results) == 1 and queued(queue) == ["12430"]
    c = owner_check(services)
    assert c["state"] == "running" and c["handover"]["owner"] == "vps"  # taken over, on record
    assert "taken over at a slot run" in sql("select note from public.seatwatch_handover")[0]["note"]


def test_an_upgrade_of_a_running_service_records_the_hand_over(services, sql, database):
    """Migration 0008 on a service whose own checks ran recently: it keeps the schedule."""
    from app.db.migrations import _sql

    migration = _sql("migrations/0008_handover.sql")
    applied = sql("select applied_at from public.seatwatch_migrations where name = '0004_section_states.sql'")
    try:
        sql("update public.seatwatch_migrations set applied_at = now() - interval '30 days' "
            "where name = '0004_section_states.sql'")
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(migration)  # nothing of ours checked: no record
        assert sql("select owner from public.seatwatch_handover") == []
        sql("""insert into public.seatwatch_section_states (term, class_nbr, scraped_at)
               values ('2261', '12430', now() - interval '5 minutes')""")
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(migration)
        assert sql("select owner, by_host from public.seatwatch_handover") == [
            {"owner": "vps", "by_host": "migration 0008"}]
    finally:
        sql("update public.seatwatch_migrations set applied_at = %s where name = '0004_section_states.sql'",
            (applied[0]["applied_at"],))


def test_a_second_deployment_of_this_service_on_the_same_database_is_seen(old_system, queue, scraper, sql,
                                                                          database, monkeypatch):
    """A second VPS deployed by mistake (its own Redis, the same database) writes the same own records:
    told apart by the deployment's name on each check (SEATWATCH_INSTANCE)."""
    now = clear_of_slot_boundaries()
    sql("insert into public.seatwatch_handover (owner, by_host) values ('vps', 'test')")
    scheduler().tick(now)
    run_queue(queue)
    age_checks(database, dt.timedelta(minutes=20))
    assert owner_check(old_system)["status"] == "healthy"
    other = dataclasses.replace(old_system.settings, instance="seatwatch@198.51.100.7")
    monkeypatch.setattr(old_system, "settings", other)
    from app.check.run import check_section

    check_section(old_system, TERM, EVEN[0])  # the other deployment's check
    monkeypatch.undo()
    c = owner_check(old_system)
    assert c["status"] == "degraded" and c["sections_checked_outside"] == 1, c
    assert sql("select checked_by from public.seatwatch_section_states where class_nbr = %s",
               (EVEN[1],))[0]["checked_by"] == old_system.settings.checker


def test_a_watch_the_site_just_added_is_still_checked_by_a_late_run(services, make_watch, queue, sql):
    """The site's look-up (adding a watch writes class_states with last_changed_at = last_checked_at)
    is no check of the slot: a catch-up run right after it still queues the section."""
    sql("insert into public.seatwatch_handover (owner, by_host) values ('vps', 'test')")
    make_watch("new@asu.edu", "12430")
    sql("""insert into public.class_states (term, subject, catalog_nbr, class_nbr, seats_available,
                                             last_checked_at, last_changed_at)
           values ('2261', 'CSE', '110', '12430', 0, now(), now())""")
    results = {r["stagger_group"]: r for r in scheduler().tick(clear_of_slot_boundaries())}
    assert results["even"]["sections_enqueued"] == 1 and "sections_checked_elsewhere" not in results["even"]
    assert queued(queue) == ["12430"]
