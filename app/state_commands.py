"""The commands that show and change the service's state: `status`, `heartbeat`, `dead-letters`,
`handover` (the command line itself is app/__main__.py)."""

from __future__ import annotations

import json


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_dead_letters(args) -> int:
    from app.services import get_services

    letters = get_services().dead_letters
    if args.drop or args.drop_all:
        gone = letters.drop(None if args.drop_all else args.drop)
        _print({"dropped": [_iso_times(e) for e in gone], "dropped_ever": letters.dropped()})
        return 0 if gone or args.drop_all else 1  # an id that matched nothing is a typo
    if not args.requeue:
        _print([_iso_times(e) for e in letters.list()])
        return 0
    from app import tasks

    _print(letters.requeue(tasks.enqueue_checks))
    return 0


def cmd_heartbeat(args) -> int:
    from app.services import get_services

    _print({"beats": [_iso_times(b) for b in get_services().heartbeat.beats()]})
    return 0


_EPOCH_FIELDS = ("at", "started", "failed_at")


def _iso_times(entry: dict) -> dict:
    """One time format across every command: ISO 8601 UTC, not the epoch floats Redis stores."""
    from app.timeutil import iso_from_epoch

    return {k: iso_from_epoch(v) if k in _EPOCH_FIELDS and isinstance(v, (int, float)) else v
            for k, v in entry.items()}


def cmd_status(args) -> int:
    from app.schedule import status as schedule_status
    from app.queue.instance import huey
    from app.services import get_services

    services = get_services()
    rep = schedule_status.report(services, huey.storage.queue_key)
    breaker = services.breaker.status()["state"].upper()  # as health spells it: CLOSED, OPEN, HALF_OPEN
    deliveries = _delivery_status(services)
    if args.json:
        _print({**rep, "circuit_breaker": breaker, "deliveries": deliveries})
    else:
        print(schedule_status.format_table(rep, breaker))
        print(_delivery_lines(deliveries))
    return 0 if rep.get("status", "healthy") == "healthy" else 1  # scripts and monitors can tell


def _delivery_status(services) -> dict:
    from app import db
    from app.db import batches

    with db.transaction(services.pool) as conn:
        return batches.delivery_counts(conn)


def _delivery_lines(d: dict) -> str:
    """Emails waiting and not delivered in the last 24 h, by outcome and reason."""
    lines = [f"emails: {d['pending']} waiting ({d['overdue']} overdue), "
             f"{d['failed']} not delivered in the last 24 h"]
    if d.get("refused"):
        lines.append(f"  waiting on a refusal (HTTP {d['refused']['status']}): {d['refused']['error']}")
    for r in d.get("reasons", []):
        lines.append(f"  {r['count']:>5} {r['outcome']:<8} {r['reason']}")
    return "\n".join(lines)


def cmd_handover(args) -> int:
    from app import db
    from app.db import checkers
    from app.schedule import handover
    from app.services import get_services
    from app.settings import hostname
    from app.timeutil import iso

    services = get_services()
    with db.transaction(services.pool) as conn:
        if args.to:
            checkers.write_handover(conn, args.to, hostname(), args.note)
        elif args.clear:
            checkers.clear_handover(conn)
        record = checkers.read_handover(conn)
        obs = checkers.observe(conn, checkers.outside_since(record), services.settings.checker)
    verdict = handover.decide(record, obs, services.settings.scheduler)
    _print({"state": verdict.state, "runs_here": verdict.runs_here, "note": verdict.note,
            "problem": verdict.problem, "handover": record and {
                "owner": record.owner, "at": iso(record.at), "by": record.by_host, "note": record.note},
            "sections_checked_outside_last_hour": obs.outside,
            "last_outside_check": obs.last_outside_at and iso(obs.last_outside_at)})
    return 1 if verdict.problem else 0
