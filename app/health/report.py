"""The health report in the IETF draft's format (draft-inadarei-api-health-check), for the health
URL when a caller asks for it (Accept: application/health+json): status pass|warn|fail and
`checks` keyed "component:measurement", each a list of observations. app.health.checks makes the
report; this only renders it."""

from __future__ import annotations

from app.health.checks import DEGRADED, HEALTHY, UNHEALTHY

DRAFT_STATUS = {HEALTHY: "pass", DEGRADED: "warn", UNHEALTHY: "fail"}

# check -> (componentType, [(key "component:measurement", field, unit, componentId)])
_MEASUREMENTS = {
    "database": ("datastore", [("postgresql:responseTime", "latency_ms", "ms", None)]),
    "redis": ("datastore", [("redis:responseTime", "latency_ms", "ms", None)]),
    "queue": ("component", [("queue:pending", "pending", None, None),
                            ("queue:scheduled", "scheduled", None, None),
                            ("queue:deadLetters", "dead_letters", None, None)]),
    "scheduler": ("component", [("scheduler:heartbeatAge", "age_seconds", "s", None)]),
    "circuit_breaker": ("component", [("scraperCircuitBreaker:state", "state", None, None)]),
    "cron_lock": ("component", [("cronLock:locked", "locked", None, None)]),
    "capacity": ("component", [("checks:throughput", "throughput_per_minute", "checks/min", None),
                               ("checks:drainTime", "drain_seconds", "s", None)]),
    "cron": ("component", [("cron:lastRunAge", "even.age_seconds", "s", "even"),
                           ("cron:lastRunAge", "odd.age_seconds", "s", "odd")]),
    "deliveries": ("component", [("emailDeliveries:pending", "pending", None, None),
                                 ("emailDeliveries:overdue", "overdue", None, None)]),
    "configuration": ("component", [("configuration:missingVariables", "missing", None, None)]),
    "email": ("component", [("email:configured", "configured", None, None)]),
}


def _field(result: dict, path: str):
    value = result
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def as_health_json(report: dict) -> dict:
    """The report as draft-inadarei-api-health-check: status pass|warn|fail, and `checks` keyed
    "component:measurement", each a list of observations."""
    checks: dict[str, list] = {}
    for name, result in report["checks"].items():
        # A check without measurements here (a new one) still shows up, as its status.
        ctype, measurements = _MEASUREMENTS.get(name, ("component", [(f"{name}:status", "status", None, None)]))
        for key, path, unit, component_id in measurements:
            entry = {"componentType": ctype, "status": DRAFT_STATUS[result["status"]],
                     "time": report["timestamp"]}
            if component_id:
                entry["componentId"] = component_id
            value = _field(result, path)
            if value is not None:
                entry["observedValue"] = value
                if unit:
                    entry["observedUnit"] = unit
            if result.get("error") or result.get("reason"):
                entry["output"] = result.get("error") or result.get("reason")
            checks.setdefault(key, []).append(entry)
    return {"status": DRAFT_STATUS[report["status"]], "serviceId": "seatwatch",
            "description": "seat-watch backend", "checks": checks}
