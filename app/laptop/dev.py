"""`make dev` (`python -m app dev`): the whole service on this machine, with no outside accounts.

PostgreSQL and Redis of its own (app.laptop.devservers: in ./.dev, on free ports, stopped with it;
or yours, with --database-url and --redis-url), the real web and worker processes,
the simulated scraper (app.check.simscraper) instead of the scraper service and the outbox folder
(app.mail.outbox) instead of Resend. It creates and migrates a database of its own, seeds a few
watches, then runs a cron cycle for both groups every `--cycle` seconds (the scheduler's own slots only
come at :00 and :30), so emails appear in the outbox within minutes. Ctrl-C stops everything.

The dev stand-ins are chosen by settings that app.settings refuses unless SEATWATCH_ENV is
development; this command also refuses to start where SEATWATCH_ENV says production.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from app.check.simscraper import CATALOG
from app.laptop import devservers
from app.settings import SettingsError, declared_environment, environment_with

TERM = "2261"
SEED_USERS = ("ana@dev.example", "ben@dev.example", "cho@dev.example")
CRON_SECRET = "dev-cron-secret"  # a local, throwaway value: the dev web is bound to 127.0.0.1


def dev_environment(args) -> dict[str, str]:
    """Settings of the dev processes: explicit values, never the operator's real secrets."""
    return environment_with({
        "SEATWATCH_ENV": "development",
        "SEATWATCH_SCRAPER": "simulated",
        "SEATWATCH_MAILER": "outbox",
        "SEATWATCH_OUTBOX_DIR": str(args.outbox),
        "SEATWATCH_SIM_PERIOD_SECONDS": str(args.sim_period),
        "SEATWATCH_NAME": args.name,
        "SEATWATCH_RELEASE": "dev",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        # Required settings whose services dev mode replaces: placeholders, never called.
        "SCRAPER_URL": "http://127.0.0.1:9/simulated",
        "SCRAPER_SECRET_TOKEN": "dev-unused",
        "RESEND_API_KEY": "re_dev_unused",
        "RESEND_API_URL": "http://127.0.0.1:9/outbox",
        "NOTIFICATION_FROM_EMAIL": "PickMyClass Dev <alerts@dev.example>",
        "NEXT_PUBLIC_SITE_URL": "http://127.0.0.1:3000",
        "CRON_SECRET": CRON_SECRET,
        "SUPABASE_SERVICE_ROLE_KEY": "dev-service-role-key",
        # Short blocking reads: Ctrl-C stops the worker in seconds (local Redis, commands are free).
        "HUEY_READ_TIMEOUT_SECONDS": "5",
    })


def ensure_database(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = info.get("dbname")
    if not name:
        raise SettingsError("--database-url must name a database")
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')


def seed(dsn: str) -> list[tuple[str, str]]:
    """A few users watching the simulated sections (idempotent); the (email, class_nbr) pairs."""
    pairs = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i, email in enumerate(SEED_USERS):
            row = conn.execute("select id from auth.users where email = %s", (email,)).fetchone()
            user_id = row[0] if row else conn.execute(
                "insert into auth.users (email) values (%s) returning id", (email,)).fetchone()[0]
            for class_nbr in list(CATALOG)[i:i + 2]:
                subject, catalog_nbr = CATALOG[class_nbr][:2]
                conn.execute(
                    """insert into public.class_watches (user_id, term, subject, catalog_nbr, class_nbr)
                       values (%s, %s, %s, %s, %s) on conflict do nothing""",
                    (user_id, TERM, subject, catalog_nbr, class_nbr))
                pairs.append((email, class_nbr))
    return pairs


def _app(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)


def _cron(env: dict) -> int:
    enqueued = 0
    for group in ("even", "odd"):
        done = _app(env, "cron", "--group", group, "--force")
        if done.returncode == 0:
            enqueued += json.loads(done.stdout).get("sections_enqueued", 0)
        else:
            print(f"dev: cron {group}: {done.stderr.strip()}", flush=True)
    return enqueued


STOP_SECONDS = 20  # Ctrl-C: the graceful stop of web and worker together, then SIGKILL


def run_command(args, command: list[str]) -> int:
    """`python -m app COMMAND` against a running dev mode (`make dev-run CMD=status`): the same
    settings its processes have, so nothing is exported by hand."""
    if not command:
        raise SettingsError("dev-run needs a command, e.g. status")
    if not (args.database_url and args.redis_url):
        found = devservers.running_urls()
        args.database_url, args.redis_url = args.database_url or found[0], args.redis_url or found[1]
    args.outbox = Path(args.outbox).resolve()
    return subprocess.run([sys.executable, "-m", "app", *command], env=dev_environment(args)).returncode


def _stop(procs: list[tuple[str, subprocess.Popen]]) -> None:
    """Stop both at once within one shared bound. Waiting for each in turn (30 s each) made a slow
    stop of both exceed a minute after Ctrl-C; a dev run loses nothing to a kill (the state is in
    PostgreSQL), so whatever is still running after STOP_SECONDS is killed, and says so."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the graceful stop of both (as PM2 does)
    deadline = time.monotonic() + STOP_SECONDS
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"dev: {name} did not stop within {STOP_SECONDS} s of Ctrl-C; killed", file=sys.stderr, flush=True)
            proc.kill()
            proc.wait()


def run(args) -> int:
    """Dev mode, on its own servers unless both URLs are given (app.laptop.devservers)."""
    if args.database_url and args.redis_url:
        return _run(args)
    if declared_environment() == "production":
        raise SettingsError("refusing to start dev mode: SEATWATCH_ENV=production marks this "
                            "machine as production")
    with devservers.private_servers() as (database_url, redis_url):
        args.database_url, args.redis_url = args.database_url or database_url, args.redis_url or redis_url
        return _run(args)


def _stop_on_ctrl_c() -> None:
    """Ctrl-C (and SIGTERM) stop dev mode however it was started. Python raises KeyboardInterrupt on
    SIGINT only when SIGINT was not ignored at its start, and a shell's background job (`cmd &`
    without job control, as a CI runner may start the suite) inherits SIGINT ignored: dev mode then
    ran on to its --duration after Ctrl-C (the CI flake of 2026-12-06)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _run(args) -> int:
    _stop_on_ctrl_c()
    if declared_environment() == "production":
        raise SettingsError("refusing to start dev mode: SEATWATCH_ENV=production marks this "
                            "machine as production")
    if args.cycle <= 0:
        raise SettingsError("--cycle must be a positive number of seconds")
    args.outbox = Path(args.outbox).resolve()
    env = dev_environment(args)
    ensure_database(args.database_url)
    migrated = _app(env, "migrate", "--bootstrap")
    if migrated.returncode != 0:
        print(migrated.stderr, file=sys.stderr)
        return migrated.returncode
    watches = seed(args.database_url)
    procs: list[tuple[str, subprocess.Popen]] = []
    try:  # from the first start on: Ctrl-C at any moment stops what was started
        procs.append(("worker", subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env)))
        procs.append(("web", subprocess.Popen([sys.executable, "-m", "app", "web", "--port", str(args.port)],
                                              env=env)))
        return _serve(args, env, watches, procs)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(procs)


def _serve(args, env: dict, watches, procs: list[tuple[str, subprocess.Popen]]) -> int:
    base = f"http://127.0.0.1:{args.port}"
    print(f"""
seatwatch dev mode: web and worker running locally, simulated scraper, emails to a folder.
  outbox (each email as .html and .txt): {args.outbox}
  open:    {base}/api/monitoring/health
  full:    curl -H 'Authorization: Bearer {CRON_SECRET}' {base}/api/monitoring/health
  cron:    every {args.cycle:g} s (both groups); seats flip every {args.sim_period:g} s
  watches: {len(watches)} seeded ({', '.join(sorted({c for _, c in watches}))}, term {TERM})
  database {args.database_url}, Redis {args.redis_url} (prefix {args.name})
  CLI:     make dev-run CMD=status   (any `python -m app` command, with these settings)
Ctrl-C stops everything.
""", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    while deadline is None or time.monotonic() < deadline:
        if any(p.poll() is not None for _, p in procs):
            print("dev: web or worker exited; stopping", file=sys.stderr)
            return 1
        enqueued = _cron(env)
        emails = len(list(args.outbox.glob("*.html"))) if args.outbox.exists() else 0
        print(f"dev: {time.strftime('%H:%M:%S')} enqueued {enqueued} checks; "
              f"{emails} email(s) in the outbox", flush=True)
        time.sleep(args.cycle)
    return 0
