"""The latest health report, shared through Redis, so alerts reuse what health already computed.

The web's health cache publishes every report it computes (one SET, only when alerts are
configured); the worker's alert evaluation reads it (one GET) and computes a report of its own
only when nobody has for a while (app.alerting.alerts). So a monitor polling the health URL pays for the
checks once, and the alerts ride on them; an unpolled service pays for one report every
app.alerting.alerts.OWN_REPORT_SECONDS.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

log = logging.getLogger(__name__)

KEEP_SECONDS = 3600  # an older report is no use to anyone; let Redis drop it


def publish(client, keys, report: dict) -> dict:
    """Store `report` as the latest; returns it. A failure is logged, never raised: the caller
    (a health request) must not fail because the copy did."""
    shared = {k: v for k, v in report.items() if k != "cache_age_ms"}
    try:
        client.set(keys.health_report, json.dumps(shared, default=str), ex=KEEP_SECONDS)
    except Exception as exc:  # Redis down: health itself reports it
        log.warning("could not share the health report: %s", type(exc).__name__)
    return report


def age_seconds(report: dict, now: float | None = None) -> float:
    """How long ago the report's checks ran."""
    at = datetime.fromisoformat(report["timestamp"].replace("Z", "+00:00")).timestamp()
    return (time.time() if now is None else now) - at


def latest(client, keys) -> dict | None:
    """The latest published report, or None (none yet, expired, unreadable)."""
    raw = client.get(keys.health_report)
    if not raw:
        return None
    try:
        report = json.loads(raw)
        age_seconds(report)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return report
