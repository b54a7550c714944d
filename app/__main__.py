"""Command line: `python -m app COMMAND`. Exit 0 on success, non-zero with a one-line reason."""

from __future__ import annotations

import argparse
import json
import sys

from app.settings import SettingsError, get_settings
from app.state_commands import cmd_dead_letters, cmd_handover, cmd_heartbeat, cmd_status


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_migrate(args) -> int:
    from app.db import migrations

    applied = migrations.migrate(get_settings().database_url, bootstrap=args.bootstrap)
    _print({"applied": applied, "bootstrap": args.bootstrap})
    return 0


def cmd_cron(args) -> int:
    from app import tasks

    _print(tasks.run_cron_now(args.group, force=args.force))
    return 0


def cmd_check(args) -> int:
    from app.check.run import check_section
    from app.services import get_services

    _print(check_section(get_services(), args.term, args.class_nbr).as_dict())
    return 0


def cmd_worker(args) -> int:
    from app.queue import worker

    settings = get_settings()
    worker.run(settings, scheduler=settings.scheduler and not args.no_scheduler)
    return 0


def cmd_sweep(args) -> int:
    from app.mail import delivery
    from app.services import get_services

    # The operator's sweep: every open batch now, backoff or not (say, after fixing the sender).
    _print(delivery.sweep(get_services(), grace_seconds=0, force=True))
    return 0


def cmd_breaker(args) -> int:
    from app.services import get_services

    breaker = get_services().breaker
    if args.action == "reset":
        breaker.reset()
    status = breaker.status()
    _print({**status, "state": status["state"].upper()})  # one spelling everywhere: health's CLOSED/OPEN/HALF_OPEN
    return 0


def cmd_lock(args) -> int:
    from app.services import get_services

    lock = get_services().cron_lock
    if args.action == "release":
        _print({"released": lock.force_release()})
    else:
        _print(lock.status())
    return 0


def cmd_alert(args) -> int:
    from app.alerting import alerts

    settings = get_settings()
    if args.action == "status":
        from app.services import get_services

        _print({"configured": alerts.configured(settings),
                "state": alerts.load_state(get_services().redis, get_services().keys)})
        return 0
    if not alerts.configured(settings):
        print("error: no alert channel configured (SEATWATCH_ALERT_EMAIL, SEATWATCH_ALERT_URLS)",
              file=sys.stderr)
        return 1
    results = alerts.send_test(settings)
    for r in results:
        print(f"{'ok    ' if r['ok'] else 'FAILED'} {r['channel']}"
              + (f": {r['error']}" if not r["ok"] else ""))
    return 0 if all(r["ok"] for r in results) else 1


def cmd_web(args) -> int:
    from app.web import routes

    routes.serve(args.host, args.port)
    return 0


def cmd_health(args) -> int:
    from app.health import checks
    from app.services import get_services

    report = checks.run_checks(get_services())
    _print(report)
    return 0 if report["status"] == "healthy" else 1


def cmd_preview_emails(args) -> int:
    from pathlib import Path

    from app.mail import preview

    for path in preview.write_previews(Path(args.directory)):
        print(path)
    return 0


def cmd_dev(args) -> int:
    from app.laptop import dev

    return dev.run(args)


def cmd_dev_run(args) -> int:
    from app.laptop import dev

    return dev.run_command(args, args.command)


def cmd_cutover_check(args) -> int:
    from app.laptop import cutover

    ssh = None
    if args.ssh_user:
        ssh = ["ssh", "-o", "BatchMode=yes", "-p", str(args.ssh_port)]
        ssh += ["-i", args.ssh_key] if args.ssh_key else []
        ssh += ["-o", f"UserKnownHostsFile={args.known_hosts}"] if args.known_hosts else []
        ssh.append(f"{args.ssh_user}@{args.host}")
    return cutover.run(args.host, args.domain, ca_file=args.ca_file, ssh=ssh)


def _version() -> str:
    import os
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("seatwatch")
    except PackageNotFoundError:
        number = "unknown"
    return f"seatwatch {number} (release {os.environ.get('SEATWATCH_RELEASE') or 'unknown'})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="seat-watch backend")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("migrate", help="apply this service's database migrations")
    s.add_argument("--bootstrap", action="store_true",
                   help="also create the Supabase-equivalent schema (empty databases only)")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("cron", help="one cron run now; prints the JSON result")
    s.add_argument("--group", choices=["even", "odd"],
                   help="default: by the current minute; always the group's latest slot that has "
                        "started (odd before :30: the previous hour's :30 slot)")
    s.add_argument("--force", action="store_true", help="run even if this slot already ran")
    s.set_defaults(func=cmd_cron)

    s = sub.add_parser("check", help="check one section now, synchronously")
    s.add_argument("term")
    s.add_argument("class_nbr")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("worker", help="run the Huey consumer with this project's flags")
    s.add_argument("--no-scheduler", action="store_true",
                   help="extra worker host: no cron slots or sweep, only checks and its heartbeat (huey -n)")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("sweep", help="deliver claimed-but-undelivered notifications now")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("breaker", help="the scraper circuit breaker")
    s.add_argument("action", choices=["status", "reset"])
    s.set_defaults(func=cmd_breaker)

    s = sub.add_parser("lock", help="the cron lock")
    s.add_argument("action", choices=["status", "release"])
    s.set_defaults(func=cmd_lock)

    s = sub.add_parser("dead-letters", help="checks that failed every retry")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--requeue", action="store_true", help="enqueue them again and clear the list")
    g.add_argument("--drop", nargs="+", metavar="ID", help="remove these entries without requeueing (logged, counted)")
    g.add_argument("--all", dest="drop_all", action="store_true", help="with nothing else: drop every entry")
    s.set_defaults(func=cmd_dead_letters)

    s = sub.add_parser("heartbeat", help="each host's last consumer heartbeat (release, pid, age)")
    s.set_defaults(func=cmd_heartbeat)

    s = sub.add_parser("status", help="capacity table: per group last run, sections, done, "
                                      "failed, drain time; throughput, backlog, breaker, scheduler")
    s.add_argument("--json", action="store_true", help="the same figures as JSON")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("alert", help="operator alerts: `test` sends a test alert to every "
                                     "channel and says which took it; `status` shows the incident")
    s.add_argument("action", choices=["test", "status"])
    s.set_defaults(func=cmd_alert)

    s = sub.add_parser("web", help="serve the HTTP endpoints with waitress")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=cmd_web)

    s = sub.add_parser("preview-emails", help="render both emails for a sample section as .html/.txt")
    s.add_argument("directory")
    s.set_defaults(func=cmd_preview_emails)

    for name in ("dev", "dev-run"):
        s = sub.add_parser(name, help="web + worker locally: simulated scraper, emails to a folder" if name == "dev"
                           else "a `python -m app` command with the settings of `dev` (its defaults or these options)")
        _dev_options(s, name)
    return _more_commands(sub, p)


def _dev_options(s, name: str) -> None:
    s.add_argument("--cycle", type=float, default=30.0, help="seconds between cron cycles (30)")
    s.add_argument("--sim-period", type=float, default=120.0,
                   help="seconds between the simulated sections' seat changes (120)")
    s.add_argument("--outbox", default="dev-outbox", help="folder for the emails (./dev-outbox)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--database-url", help="a PostgreSQL of yours (default: dev mode starts its own in ./.dev)")
    s.add_argument("--redis-url", help="a Redis of yours (default: dev mode starts its own in ./.dev)")
    s.add_argument("--name", default="seatwatch-dev", help="queue name and Redis key prefix")
    s.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)")
    if name == "dev-run":
        s.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, e.g. status")
    s.set_defaults(func=cmd_dev if name == "dev" else cmd_dev_run)


def _more_commands(sub, p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    s = sub.add_parser("handover", help="which system runs the schedule (docs/runbook.md, the hand-over); "
                                        "without options: show it")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--to", choices=["vps", "old"],
                   help="vps: this service runs the slots from the next tick on (each skips the sections "
                        "the old system already checked in it); old: hand it back (rollback)")
    g.add_argument("--clear", action="store_true",
                   help="forget the record: run slots only while nothing else checks sections")
    s.add_argument("--note", help="a word for the record (who, why)")
    s.set_defaults(func=cmd_handover)

    s = sub.add_parser("cutover-check",
                       help="from the laptop: is the VPS ready for the DNS switch (app/laptop/cutover.py)")
    s.add_argument("--host", required=True, help="the VPS's public address")
    s.add_argument("--domain", required=True, help="the name Caddy serves")
    s.add_argument("--ca-file", help="trust this CA too (tests; a staging CA)")
    s.add_argument("--ssh-user", help="also ask PM2 over ssh whether the worker runs")
    s.add_argument("--ssh-key")
    s.add_argument("--ssh-port", type=int, default=22)
    s.add_argument("--known-hosts")
    s.set_defaults(func=cmd_cutover_check)

    s = sub.add_parser("health", help="print the health report; exit 0 only when healthy")
    s.set_defaults(func=cmd_health)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from app import logs

    logs.setup()
    try:
        return args.func(args)
    except SettingsError as exc:
        print(logs.mask(f"error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the operator; details are in the logs
        from app.schedule.cron import CronLocked

        print(logs.mask(f"error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 3 if isinstance(exc, CronLocked) else 1


if __name__ == "__main__":
    sys.exit(main())
