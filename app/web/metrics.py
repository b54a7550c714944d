"""`GET /api/metrics`: the health report's figures in Prometheus's text exposition format.

Everything comes from the report health computes (app.health.checks: Redis capacity records, breaker,
queue, heartbeat; PostgreSQL deliveries), served from the same cache, plus the alert tallies
(app.alerting.alerts), the worker's counters (app.workstats: checks, emails, the check duration
histogram, the worker's memory; one HGETALL per rendering), the release as build info and this
web process's own memory. The state lives in Redis and PostgreSQL, not in this process, so the web and the
worker can never disagree and no multiprocess setup is needed. prometheus_client renders it from
a registry of our own, with no default collectors (no process or platform details).

docs/health.md lists every metric. A metric whose figure the report lacks (a check that failed,
a group that never ran) is left out rather than reported as 0.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import exposition
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

STATUS_VALUE = {"healthy": 0, "degraded": 1, "unhealthy": 2}
BREAKER_VALUE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
SLOT_OUTCOMES = ("done", "checked", "changed", "emailed", "failed", "remaining")
# The classic text format (every Prometheus and agent reads it; our names are all plain ASCII).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def _gauge(name: str, doc: str, value, labels: dict | None = None) -> GaugeMetricFamily | None:
    if value is None:
        return None
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), float(value))
    return family


def families(report: dict, alert_counts: dict, now: float | None = None) -> list:
    """The metric families of one report (and the alert tallies)."""
    now = time.time() if now is None else now
    checks = report["checks"]
    out = [_gauge("seatwatch_health_status", "overall health: 0 healthy, 1 degraded, 2 unhealthy",
                  STATUS_VALUE[report["status"]]),
           _gauge("seatwatch_health_report_timestamp_seconds", "when the report's checks ran",
                  _epoch(report["timestamp"]))]
    status = GaugeMetricFamily("seatwatch_check_status", "each health check: 0 healthy, "
                               "1 degraded, 2 unhealthy", labels=["check"])
    for name, result in checks.items():
        status.add_metric([name], STATUS_VALUE[result["status"]])
    out.append(status)

    queue = checks.get("queue", {})
    out += [_gauge("seatwatch_queue_pending", "checks waiting on the queue", queue.get("pending")),
            _gauge("seatwatch_queue_scheduled", "retries waiting for their time", queue.get("scheduled")),
            _gauge("seatwatch_dead_letters", "checks that failed every retry", queue.get("dead_letters"))]

    breaker = checks.get("circuit_breaker", {})
    out += [_gauge("seatwatch_breaker_state", "scraper circuit breaker: 0 closed, 1 half-open, 2 open",
                   BREAKER_VALUE.get(breaker.get("state"))),
            _gauge("seatwatch_breaker_failures", "consecutive scraper failures",
                   breaker.get("failure_count"))]

    scheduler = checks.get("scheduler", {})
    out.append(_gauge("seatwatch_scheduler_heartbeat_age_seconds",
                      "age of the newest consumer heartbeat when the report ran",
                      scheduler.get("age_seconds")))
    out += _capacity(checks.get("capacity", {}), now)

    emails = GaugeMetricFamily("seatwatch_emails", "notification emails by state (the deliveries "
                               "check's counts: pending, overdue, failed in 24 h, ...)",
                               labels=["state"])
    for field, value in checks.get("deliveries", {}).items():
        if isinstance(value, int) and not isinstance(value, bool) and field != "refused_status":
            emails.add_metric([field], value)
    out.append(emails)

    sent = CounterMetricFamily("seatwatch_alerts_sent", "alert events delivered, by event and "
                               "channel kind", labels=["event", "channel"])
    failed = CounterMetricFamily("seatwatch_alerts_failed", "alert deliveries that failed (each "
                                 "is retried), by event and channel kind", labels=["event", "channel"])
    for family, bucket in ((sent, "sent"), (failed, "failed")):
        for key, n in sorted(alert_counts.get(bucket, {}).items()):
            family.add_metric(key.split("/", 1), n)
    out += [sent, failed, _gauge("seatwatch_alert_incident_open", "1 while an alerted incident "
                                 "is open", int(bool(alert_counts.get("open"))))]
    return [f for f in out if f is not None]


def work_families(work: dict, release: str, web_rss: int | None) -> list:
    """The worker's counters (app.workstats.read), the build info and the processes' memory."""
    checks = CounterMetricFamily("seatwatch_checks", "section checks by outcome (done, failed: "
                                 "an attempt that raised, skipped: refused by the open breaker)",
                                 labels=["outcome"])
    for outcome in ("done", "failed", "skipped"):
        checks.add_metric([outcome], work.get("checks", {}).get(outcome, 0.0))
    emails = CounterMetricFamily("seatwatch_emails_sent", "notification emails at their check: "
                                 "delivered, or not (refused or failed; the sweep retries what "
                                 "may pass)", labels=["outcome"])
    for outcome in ("delivered", "not_delivered"):
        emails.add_metric([outcome], work.get("emails", {}).get(outcome, 0.0))
    duration = work.get("duration", {"buckets": {}, "count": 0.0, "sum": 0.0})
    buckets = [(f"{bound:g}", n) for bound, n in sorted(duration["buckets"].items())]
    histogram = HistogramMetricFamily("seatwatch_check_duration_seconds", "one check, scraper call "
                                      "to stored state (done or failed)",
                                      buckets=buckets + [("+Inf", duration["count"])],
                                      sum_value=duration["sum"])
    build = InfoMetricFamily("seatwatch_build", "the release this web process runs",
                             value={"release": release or "unknown"})
    memory = GaugeMetricFamily("seatwatch_process_resident_memory_bytes", "resident memory: this "
                               "web process, and each worker host as of its last busy minute",
                               labels=["process", "host"])
    if web_rss is not None:
        memory.add_metric(["web", ""], web_rss)
    for host, rss in sorted(work.get("worker_rss", {}).items()):
        memory.add_metric(["worker", host], rss)
    return [checks, emails, histogram, build, memory]


def _capacity(cap: dict, now: float) -> list:
    out = [_gauge("seatwatch_queue_backlog", "checks waiting on the queue (capacity's view)",
                  cap.get("backlog")),
           _gauge("seatwatch_throughput_checks_per_minute", "checks per minute over recent slots",
                  cap.get("throughput_per_minute")),
           _gauge("seatwatch_drain_seconds", "expected time for the backlog to drain",
                  cap.get("drain_seconds"))]
    checks = GaugeMetricFamily("seatwatch_slot_checks", "the group's last slot: checks by "
                               "outcome", labels=["group", "outcome"])
    sections = GaugeMetricFamily("seatwatch_slot_sections", "the group's last slot: checks "
                                 "enqueued", labels=["group"])
    since = GaugeMetricFamily("seatwatch_slot_finished_age_seconds", "seconds since the "
                              "group's last slot finished", labels=["group"])
    duration = GaugeMetricFamily("seatwatch_slot_duration_seconds", "the group's last slot: "
                                 "start to last check", labels=["group"])
    for group, g in (cap.get("groups") or {}).items():
        if not g:
            continue
        for outcome in SLOT_OUTCOMES:
            checks.add_metric([group, outcome], g[outcome])
        sections.add_metric([group], g["sections"])
        duration.add_metric([group], g["duration_seconds"])
        if g.get("finished_at"):
            since.add_metric([group], round(now - _epoch(g["finished_at"]), 1))
    return out + [checks, sections, since, duration]


class _Snapshot:
    """A collector that yields the families it was given (one registry per rendering)."""

    def __init__(self, fams: list):
        self._fams = fams

    def collect(self):
        return iter(self._fams)


def render(report: dict, alert_counts: dict, now: float | None = None,
           extra: list | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(report, alert_counts, now) + (extra or [])))
    return generate_latest(registry)


class MetricsCache:
    """The rendered text, made at most every `ttl` seconds from health's own cached report (so
    a scraper every 15 s costs what health costs) and the alert tallies (one GET, only when
    alerts are configured)."""

    content_type = CONTENT_TYPE

    def __init__(self, services, health_cache, ttl: float):
        from app.health.cache import HealthCache

        self.services = services
        self._cache = HealthCache(lambda: {"text": render(health_cache.get(), self._alerts(),
                                                          extra=self._work())},
                                  ttl=ttl)

    def _work(self) -> list:
        from app import workstats

        try:
            work = workstats.read(self.services.redis, self.services.keys.work_stats)
        except Exception:  # Redis away: the report's redis check already says so
            work = {}
        return work_families(work, self.services.settings.release, workstats.resident_bytes())

    def _alerts(self) -> dict:
        if not self.services.settings.alerting:
            return {}
        from app.alerting import alerts

        try:
            return alerts.counts(self.services)
        except Exception:  # Redis away: the report's redis check already says so
            return {}

    def text(self) -> bytes:
        return self._cache.get()["text"]
