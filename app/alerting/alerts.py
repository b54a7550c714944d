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

Failures this process lives through do not wait for that polling (app.tasks calls `nudge` where
they happen: a check failing or refused by the open breaker, a check dead-lettered, an email not
delivered, a cron run raising). A nudge costs nothing by itself; it starts a follow-up thread that
evaluates at once on a report of its own (so a failing check's wait starts when it failed) and
again when its SEATWATCH_ALERT_AFTER_SECONDS are up, so the alert goes out within that delay
plus one report and one send (each bounded), not 5 to 20 minutes later. A burst of failures gets
one evaluation per NUDGE_GAP_SECONDS. A healthy idle day has no nudge and so no command more.
A failure health cannot see afterwards (a cron run that raised, for a reason gone by the next
report) is kept in the stored state as a "lived" check (app.alerting.incident) until the next
cron run succeeds or LIVED_SECONDS pass.

A failing channel is retried at each evaluation, logged each time, and given up after
MAX_ATTEMPTS; one channel failing (Resend down) never holds back the others. The state is saved
before anything is sent, so a crash mid-send resends at most that event (the email's
Idempotency-Key makes Resend replay it; a webhook sees the same `id` twice).
"""

from __future__ import annotations

import json
import logging
import threading
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
NUDGE_GAP_SECONDS = 10  # between the evaluations a burst of failures asks for
LIVED_SECONDS = 1800  # a lived failure (a cron run raising) counts until the next slot at most


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
        self._evaluating = threading.Lock()  # the tick's thread and the follow-up's, one at a time
        self._nudge_lock = threading.Lock()
        self._nudged = False
        self._lived: dict[str, str | None] = {}  # name -> reason (None: it ended), to store
        self._due_at: float | None = None  # when a failing check's wait is up (not yet alerted)
        self._follower: threading.Thread | None = None
        self._recorded: set[str] = set()  # lived failures this process stored and not ended

    def nudge(self, lived: str | None = None, reason: str | None = None) -> None:
        """A failure happened here: evaluate now and when its wait is up (see the module's
        docstring). `lived`: a failure health will not show, kept as that check (reason None:
        it ended). Never raises, never waits, no Redis command on the caller's thread."""
        if not configured(self.settings):
            return
        with self._nudge_lock:
            if lived is not None:
                self._lived[lived] = reason
                (self._recorded.add if reason else self._recorded.discard)(lived)
            self._nudged = True
            if self._follower is not None and self._follower.is_alive():
                return
            self._follower = threading.Thread(target=self._follow, daemon=True,
                                              name="alerts-follow-up")
            self._follower.start()

    def lived(self, name: str) -> bool:
        """Whether this process recorded the lived failure `name` (so its end is worth a nudge)."""
        return name in self._recorded

    def _follow(self) -> None:
        last = None
        while True:
            with self._nudge_lock:
                nudged, due = self._nudged, self._due_at
                if not nudged and due is None:
                    self._follower = None
                    return
            wait = 0.0 if nudged else max(0.0, due - self.clock())
            if last is not None:
                wait = max(wait, last + NUDGE_GAP_SECONDS - time.monotonic())
            if wait > 0:
                time.sleep(min(wait, NUDGE_GAP_SECONDS))
                continue
            with self._nudge_lock:
                self._nudged = False
            last = time.monotonic()
            try:
                with self._evaluating:
                    now = self.clock()
                    self._looked_at = now  # the tick need not look again at once
                    self._quiet_until = 0.0
                    report = sharedreport.publish(self.services.redis, self.services.keys,
                                                  self.compute())
                    if self.evaluate(report, now) is None:  # another host holds the lock
                        self._due_at = self.clock() + NUDGE_GAP_SECONDS
            except Exception as exc:  # Redis or PostgreSQL away: the tick tries again
                log.warning("alert evaluation after a failure did not run: %s", type(exc).__name__)
                self._due_at = None

    def tick(self) -> list[dict] | None:
        """Evaluate if due. Returns the new events (None: not due, not configured, or another
        host is evaluating)."""
        if not configured(self.settings):
            return None
        with self._evaluating:
            return self._tick()

    def _tick(self) -> list[dict] | None:
        now = self.clock()
        every = BUSY_SECONDS if self._busy else QUIET_LOOK_SECONDS
        if self._looked_at is not None and now - self._looked_at < every - SLACK_SECONDS:
            return None
        self._looked_at = now
        report = self.report(now)
        if (not self._busy and not incident.failing_checks(report) and now < self._quiet_until
                and not self._lived):
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
        with self._nudge_lock:
            lived = dict(self._lived)
        if (not incident.failing_checks(report) and not any(lived.values())
                and incident.quiet(load_state(client, keys))):
            self._settle(now, busy=False)  # healthy and nothing stored: no lock, no write
            with self._nudge_lock:
                for name in lived:
                    self._lived.pop(name, None)
            return []
        lock = client.lock(keys.alerts_lock, timeout=LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            return None  # another host is evaluating: it sends
        try:
            state = load_state(client, keys)
            incident.live(state, lived, now, LIVED_SECONDS)
            with self._nudge_lock:
                for name, reason in lived.items():
                    if self._lived.get(name, reason) == reason:
                        self._lived.pop(name, None)
            events = incident.step(state, incident.with_lived(report, state, now),
                                   now, self.settings.alert_after,
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
        self._settle(now, busy=not incident.quiet(state), state=state)
        return events

    def _settle(self, now: float, busy: bool, state: dict | None = None) -> None:
        self._due_at = incident.due_at(state, self.settings.alert_after) if state else None
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
