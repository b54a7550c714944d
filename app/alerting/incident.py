"""The incident rules, as a pure function of the stored state and one health report.

- A check counts as failing while its status is not healthy. It alerts once it has been failing
  for `after` seconds without a break (a blip pages nobody): the first failing check to get
  there opens the incident with an `alert`; another check reaching it during the incident is a
  new `alert`; a check that recovered and fails again later starts its wait anew.
- When every check is healthy again, an open incident ends with one `recovered`.
- Events are queued in the state's outbox, one entry per event with the channels still owed it
  (app.alerting.alerts sends them and retries the ones that failed).

The state is plain JSON (app.alerting.alerts keeps it in Redis):
`{"failing_since": {check: epoch}, "open": bool, "opened_at": epoch, "alerted": [check],
  "outbox": [{"event": {...}, "pending": [channel id], "attempts": n}],
  "sent": {"alert/email": n}, "failed": {"alert/webhook": n}, "evaluated_at": iso}`
"""

from __future__ import annotations

import uuid

from app.timeutil import iso_from_epoch

HEALTHY = "healthy"
SUMMARY_CHARS = 200


def failing_checks(report: dict) -> dict[str, str]:
    """name -> why, for every check not healthy (its reason, error or status)."""
    return {name: str(c.get("reason") or c.get("error") or c["status"])
            for name, c in report["checks"].items() if c.get("status") != HEALTHY}


def live(state: dict, changes: dict[str, str | None], now: float, seconds: float) -> None:
    """Record failures health will not show (name -> reason; None: it ended), each for `seconds`
    at most, in the state's "lived" (expired ones dropped)."""
    lived = {n: v for n, v in state.get("lived", {}).items() if v.get("until", 0) > now}
    for name, reason in changes.items():
        if reason is None:
            lived.pop(name, None)
        else:
            lived[name] = {"reason": reason[:SUMMARY_CHARS], "until": now + seconds}
    if lived:
        state["lived"] = lived
    else:
        state.pop("lived", None)


def with_lived(report: dict, state: dict, now: float) -> dict:
    """The report with the state's lived failures as failing checks of their own."""
    lived = {n: v for n, v in state.get("lived", {}).items() if v.get("until", 0) > now}
    if not lived:
        return report
    checks = dict(report["checks"])
    for name, entry in lived.items():
        checks[name] = {"status": "degraded", "reason": entry["reason"]}
    status = report["status"] if report["status"] != HEALTHY else "degraded"
    return {**report, "checks": checks, "status": status}


def due_at(state: dict, after: float) -> float | None:
    """When the earliest failing check not yet alerted will have waited `after` (None: none)."""
    alerted = set(state.get("alerted", []))
    waits = [t + after for n, t in state.get("failing_since", {}).items() if n not in alerted]
    return min(waits) if waits else None


def quiet(state: dict) -> bool:
    """Nothing failing, no incident open, nothing owed to a channel."""
    return not (state.get("failing_since") or state.get("open") or state.get("outbox")
                or state.get("lived"))


def step(state: dict, report: dict, now: float, after: float, *, service: str,
         host: str) -> list[dict]:
    """Advance `state` (in place) by one report; returns the new events, also queued."""
    failing = failing_checks(report)
    since = {n: t for n, t in state.get("failing_since", {}).items() if n in failing}
    for name in failing:
        since.setdefault(name, now)
    state["failing_since"] = since
    alerted = {n for n in state.get("alerted", []) if n in failing}
    due = {n for n in failing if now - since[n] >= after}
    events = []
    if due - alerted:
        if not state.get("open"):
            # The incident started when its first check started failing, not when it alerted.
            state["open"], state["opened_at"] = True, min(since.values())
        events.append(_event("alert", report, failing, sorted(due - alerted), now, service, host))
        alerted |= due
    elif state.get("open") and not failing:
        minutes = round((now - state.get("opened_at", now)) / 60)
        state["open"] = False
        state.pop("opened_at", None)
        events.append(_event("recovered", report, {}, [], now, service, host,
                             summary=f"{service} recovered: every check healthy again "
                                     f"after {minutes} min"))
    state["alerted"] = sorted(alerted)
    return events


def _event(kind: str, report: dict, failing: dict[str, str], new: list[str], now: float,
           service: str, host: str, summary: str | None = None) -> dict:
    if summary is None:
        parts = [f"{name} ({why})" for name, why in sorted(failing.items())]
        summary = f"{service} {report['status']}: " + "; ".join(parts)
    return {"id": uuid.uuid4().hex, "event": kind,
            "status": report["status"] if kind == "alert" else HEALTHY,
            "failing": sorted(failing), "new": new, "reasons": dict(sorted(failing.items())),
            "summary": summary[:SUMMARY_CHARS], "service": service, "host": host,
            "at": iso_from_epoch(now), "report_at": report.get("timestamp")}


def queue(state: dict, events: list[dict], channel_ids: list[str], limit: int) -> list[dict]:
    """Put events in the outbox for every channel; returns entries dropped past `limit`."""
    outbox = state.setdefault("outbox", [])
    outbox.extend({"event": e, "pending": list(channel_ids), "attempts": 0} for e in events)
    dropped = outbox[:-limit] if len(outbox) > limit else []
    state["outbox"] = outbox[-limit:]
    return dropped


def count(state: dict, bucket: str, event: dict, kind: str) -> None:
    """One more event sent (bucket "sent") or failed ("failed") on a kind of channel."""
    key = f"{event['event']}/{kind}"
    tally = state.setdefault(bucket, {})
    tally[key] = tally.get(key, 0) + 1
