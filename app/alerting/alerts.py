"""Alerts: when health stays bad, the operator is told once per incident, and again when it ends.

The worker's scheduler evaluates on its minutely tick (app.tasks, `alerts`): it takes the latest
health report (app.health.sharedreport: the one the web computed for the health URL, or one of its own
when nobody asked for a while), advances the incident (app.alerting.incident: its failing check names,
SEATWATCH_ALERT_AFTER_SECONDS), and sends what is owed to every channel (app.alerting.notify).

What it costs, since Redis may be billed per command (issue 12's idle budget):
- Nothing at all without SEATWATCH_ALERT_EMAIL or SEATWATCH_ALERT_URLS.
- While every check is healthy: one GET of the shared report every QUIET_LOOK_SECONDS, and a
  report of its own (health's ~19 commands and a SET) only when nobody computed one for
  OWN_REPORT_SECONDS. The stored incident state is not read: this process knows it is quiet
  (it read it at its first look and wrote every change since), and re-reads it (one GET, no
  lock, no write) with each report of its own, so a state another host changed is seen within
  OWN_REPORT_SECONDS.
- While something fails, an incident is open or a channel is owed an event: every minute, under
  a short Redis lock (so one host sends), the state is read and written. Not idle by then.

A failing channel is retried at each evaluation, logged each time, and given up after
MAX_ATTEMPTS; one channel failing (Resend down) never holds back the others. The state is saved
before anything is sent, so a crash mid-send resends at most that event (the email's
Idempotency-Key makes Resend replay it; a webhook sees the same `id` twice).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Callable

from redis.exceptions import LockError

from app.alerting import incident, notify
from app.health import sharedreport
from app.settings import Settings, hostname
from app.timeutil import iso_from_epoch

log = logging.getLogger(__name__)

BUSY_SECONDS = 60  # between evaluations while something is wrong (the tick's own period)
QUIET_LOOK_SECONDS = 300  # between looks at the shared report while all is healthy
OWN_REPORT_SECONDS = 1200  # a shared report older than this: compute one (and re-read the state)
SLACK_SECONDS = 5  # the scheduler's tick drifts a little around its minute
LOCK_SECONDS = 120  # above the longest evaluation (a report, then DELIVER_BUDGET_SECONDS)
DELIVER_BUDGET_SECONDS = 60  # sends stop starting after this; what is left goes next time
OUTBOX_LIMIT = 20
MAX_ATTEMPTS = 60  # about an hour of minutely retries


def configured(settings: Settings) -> bool:
    return settings.alerting


def load_state(client, keys) -> dict:
    raw = client.get(keys.alerts)
    if not raw:
        return {}
    try:
        state = json.loads(raw)
    except ValueError:
        log.error("alert state in Redis is unreadable; starting afresh")
        return {}
    return state if isinstance(state, dict) else {}


class Alerts:
    """The evaluation of one worker process (its memory: when it last looked, whether quiet)."""

    def __init__(self, services, compute: Callable[[], dict] | None = None,
                 clock: Callable[[], float] = time.time):
        self.services = services
        self.settings = services.settings
        if compute is None:
            from app.health import checks  # the same checks as the health URL

            compute = lambda: checks.run_checks(services)  # noqa: E731
        self.compute = compute
        self.clock = clock
        self._looked_at: float | None = None
        self._busy = True  # the first look reads the stored state: a restart mid-incident
        self._quiet_until = 0.0

    def tick(self) -> list[dict] | None:
        """Evaluate if due. Returns the new events (None: not due, not configured, or another
        host is evaluating)."""
        if not configured(self.settings):
            return None
        now = self.clock()
        every = BUSY_SECONDS if self._busy else QUIET_LOOK_SECONDS
        if self._looked_at is not None and now - self._looked_at < every - SLACK_SECONDS:
            return None
        self._looked_at = now
        report = self.report(now)
        if not self._busy and not incident.failing_checks(report) and now < self._quiet_until:
            return []  # healthy, and the stored state is known to be quiet: no Redis command
        return self.evaluate(report, now)

    def report(self, now: float) -> dict:
        """The shared report if recent enough, else a fresh one (shared for the next reader)."""
        client, keys = self.services.redis, self.services.keys
        max_age = BUSY_SECONDS if self._busy else OWN_REPORT_SECONDS
        shared = sharedreport.latest(client, keys)
        if shared is not None and sharedreport.age_seconds(shared, now) <= max_age:
            return shared
        self._quiet_until = 0.0  # a report of our own: read the stored state with it
        return sharedreport.publish(client, keys, self.compute())

    def evaluate(self, report: dict, now: float) -> list[dict] | None:
        client, keys = self.services.redis, self.services.keys
        if not incident.failing_checks(report) and incident.quiet(load_state(client, keys)):
            self._settle(now, busy=False)  # healthy and nothing stored: no lock, no write
            return []
        lock = client.lock(keys.alerts_lock, timeout=LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            return None  # another host is evaluating: it sends
        try:
            state = load_state(client, keys)
            events = incident.step(state, report, now, self.settings.alert_after,
                                   service=self.settings.name, host=hostname())
            channels = notify.channels(self.settings)
            for entry in incident.queue(state, events, [c.id for c in channels], OUTBOX_LIMIT):
                log.error("alert %s dropped unsent: more than %d events owed",
                          entry["event"]["event"], OUTBOX_LIMIT)
            for event in events:
                log.warning("alert event %s: %s", event["event"], event["summary"])
            state["evaluated_at"] = iso_from_epoch(now)  # `alert status` and the tests read it
            self._save(state)  # the decision stands before anything is sent
            if state.get("outbox"):
                self._deliver(state, channels)
                self._save(state)
        finally:
            try:
                lock.release()
            except LockError:  # outlived LOCK_SECONDS: another host may have evaluated since
                log.warning("alert evaluation took longer than its %d s lock", LOCK_SECONDS)
        self._settle(now, busy=not incident.quiet(state))
        return events

    def _settle(self, now: float, busy: bool) -> None:
        self._busy = busy
        self._quiet_until = 0.0 if busy else now + OWN_REPORT_SECONDS

    def _save(self, state: dict) -> None:
        self.services.redis.set(self.services.keys.alerts, json.dumps(state))

    def _deliver(self, state: dict, channels: list) -> None:
        by_id = {c.id: c for c in channels}
        owed = []
        started = time.monotonic()
        for entry in state["outbox"]:
            if time.monotonic() - started > DELIVER_BUDGET_SECONDS:
                owed.append(entry)  # the rest next time, well inside the lock
                continue
            event = entry["event"]
            entry["pending"] = [cid for cid in entry["pending"] if cid in by_id]  # still configured
            entry["attempts"] += 1
            for cid in list(entry["pending"]):
                channel = by_id[cid]
                try:
                    channel.send(event)
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, notify.ChannelFailed) else type(exc).__name__
                    log.warning("alert %s to %s failed (attempt %d of %d): %s",
                                event["event"], channel.label, entry["attempts"], MAX_ATTEMPTS,
                                self.settings.redact(reason))
                    incident.count(state, "failed", event, channel.kind)
                    continue
                entry["pending"].remove(cid)
                incident.count(state, "sent", event, channel.kind)
                log.info("alert %s sent to %s", event["event"], channel.label)
            if entry["pending"] and entry["attempts"] >= MAX_ATTEMPTS:
                log.error("alert %s given up after %d attempts for %d channel(s)",
                          event["event"], entry["attempts"], len(entry["pending"]))
            elif entry["pending"]:
                owed.append(entry)
        state["outbox"] = owed


def counts(services) -> dict:
    """Alerts sent and failed per `event/channel kind`, and whether an incident is open (metrics)."""
    state = load_state(services.redis, services.keys)
    return {"sent": state.get("sent", {}), "failed": state.get("failed", {}),
            "open": bool(state.get("open"))}


def send_test(settings: Settings) -> list[dict]:
    """A test event to every channel, outside any incident; per channel whether it went."""
    event = {"id": uuid.uuid4().hex, "event": "test", "status": "healthy", "failing": [],
             "new": [], "reasons": {}, "service": settings.name, "host": hostname(),
             "summary": f"{settings.name}: test alert from `python -m app alert test` on {hostname()}",
             "at": iso_from_epoch(time.time()), "report_at": None}
    results = []
    for channel in notify.channels(settings):
        try:
            channel.send(event)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, notify.ChannelFailed) else type(exc).__name__
            results.append({"channel": channel.label, "ok": False,
                            "error": settings.redact(reason)})
        else:
            results.append({"channel": channel.label, "ok": True})
    return results
