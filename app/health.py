"""The health checks behind `GET /api/monitoring/health` and `python -m app health`.

`run_checks(services)` runs every check concurrently and returns
`{"timestamp", "status", "checks": {...}, "response_time_ms"}`; `as_health_json(report)` renders
the same report in the IETF draft's format (draft-inadarei-api-health-check). app.web only maps
them to HTTP.

Status rules (docs/health.md explains them to the operator):

- unhealthy (HTTP 500): the service cannot do its job. PostgreSQL or Redis unreachable (or too
  slow to answer within the deadline), a required variable missing, email not configured, or no
  consumer heartbeat for STALE_HEARTBEAT_SECONDS (no worker runs checks or cron).
- degraded (HTTP 503): it works, but someone should look. The scraper breaker open or half-open
  (checks are paused and retried, not lost), dead letters waiting, a cron group overdue, email
  deliveries waiting longer than OVERDUE_DELIVERY_SECONDS.
- healthy (HTTP 200): none of the above.

A check that raises or misses the deadline counts as failed: "unhealthy" for the critical checks
(the ones that decide "unhealthy" above), "degraded" for the others, with `"error"` saying why
("timeout" for the deadline). Every dependency call is bounded twice: clients with short timeouts
(the process's own clients wait 5 to 10 s and retry), and an overall deadline on the pool, so a hung
Redis or PostgreSQL costs DEADLINE_SECONDS, never a hung request. No secret reaches the report:
error texts pass through `Settings.redact`, and email reports only whether it is configured.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Callable, Iterator

import psycopg
import redis
from psycopg.rows import dict_row
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import capacity, db
from app.breaker import CircuitBreaker
from app.cron import last_runs
from app.deadletters import DeadLetters
from app.heartbeat import INTERVAL_SECONDS, Heartbeat
from app.keys import Keys
from app.lock import CronLock
from app.queue import huey
from app.settings import Settings, missing_variables
from app.timeutil import iso_from_epoch

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}

DEADLINE_SECONDS = 2.0  # the whole report; checks run in parallel
REDIS_TIMEOUT_SECONDS = 1.0
PG_CONNECT_TIMEOUT_SECONDS = 2  # libpq's minimum
PG_STATEMENT_TIMEOUT_MS = 1000
# The consumer beats at start and every INTERVAL_SECONDS: two missed beats and a minute of slack.
STALE_HEARTBEAT_SECONDS = 2 * INTERVAL_SECONDS + 60
# Each group runs hourly: one missed run plus ten minutes of slack.
OVERDUE_CRON_SECONDS = 70 * 60
# The sweep runs every 5 minutes and leaves batches alone for a minute: 15 minutes is 2 failed sweeps.
OVERDUE_DELIVERY_SECONDS = 15 * 60

# Bounded, shared by all requests: with hung dependencies, checks wait for a worker and are
# cancelled at the deadline instead of piling up threads.
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")


@dataclass(frozen=True)
class Probe:
    """What the checks read: the service's Redis-backed components, rebound to a client whose
    every call is bounded (REDIS_TIMEOUT_SECONDS, no retries)."""

    settings: Settings
    keys: Keys
    redis: redis.Redis
    breaker: CircuitBreaker
    cron_lock: CronLock
    heartbeat: Heartbeat
    dead_letters: DeadLetters

    @classmethod
    def of(cls, services) -> "Probe":
        client = _bounded_redis(services.settings.redis_url)
        keys = services.keys
        return cls(services.settings, keys, client, CircuitBreaker(client, keys.breaker),
                   CronLock(client, keys.cron_lock), Heartbeat(client, keys),
                   DeadLetters(client, keys))

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection]:
        """A fresh connection (the pool would measure itself, not the database), in a
        transaction whose statements time out (SET LOCAL: safe behind a transaction pooler)."""
        kwargs = {**db.CONNECT_KWARGS, "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
                  "application_name": "seatwatch-health", "row_factory": dict_row}
        with psycopg.connect(self.settings.database_url, **kwargs) as conn:
            conn.execute(f"set local statement_timeout = {PG_STATEMENT_TIMEOUT_MS}")
            yield conn


@lru_cache(maxsize=8)
def _bounded_redis(url: str) -> redis.Redis:
    # redis-py 8 retries a timed-out command 10 times with backoff by default: never here.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                retry=Retry(NoBackoff(), 0))


# --- the checks: each returns its details, with "status" when it is not healthy ---------------

Check = Callable[[Probe], dict]
CHECKS: dict[str, tuple[Check, bool]] = {}  # name -> (function, critical)


def check(name: str, critical: bool):
    def register(fn: Check) -> Check:
        CHECKS[name] = (fn, critical)
        return fn
    return register


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


@check("database", critical=True)
def _database(probe: Probe) -> dict:
    started = time.monotonic()
    with probe.postgres() as conn:
        connected = time.monotonic()
        conn.execute("select 1").fetchone()
    return {"latency_ms": _ms_since(connected), "connect_ms": round((connected - started) * 1000, 1)}


@check("redis", critical=True)
def _redis(probe: Probe) -> dict:
    started = time.monotonic()
    probe.redis.ping()
    return {"latency_ms": _ms_since(started)}


@check("queue", critical=False)
def _queue(probe: Probe) -> dict:
    storage = huey.storage  # its key names only: the counts go through the bounded client
    with probe.redis.pipeline(transaction=False) as pipe:
        pipe.llen(storage.queue_key)
        pipe.zcard(storage.schedule_key)
        pipe.llen(probe.keys.dead_letters)
        pending, scheduled, dead = pipe.execute()
    out = {"pending": pending, "scheduled": scheduled, "dead_letters": dead}
    if dead:
        out.update(status=DEGRADED, reason=f"{dead} check(s) failed every retry: "
                                           "`python -m app dead-letters`")
    return out


@check("scheduler", critical=True)
def _scheduler(probe: Probe) -> dict:
    host, beat = probe.heartbeat.latest()
    if beat is None:
        return {"status": UNHEALTHY, "alive": False, "reason": "no consumer heartbeat",
                "last_heartbeat": None, "age_seconds": None, "host": None}
    age = round(time.time() - beat, 1)
    out = {"alive": age <= STALE_HEARTBEAT_SECONDS, "host": host,
           "last_heartbeat": iso_from_epoch(beat), "age_seconds": age}
    if not out["alive"]:
        out.update(status=UNHEALTHY, reason=f"last consumer heartbeat {age:.0f} s ago")
    return out


@check("circuit_breaker", critical=False)
def _circuit_breaker(probe: Probe) -> dict:
    out = probe.breaker.status()
    if out["state"] != "closed":
        # Checks are paused and retried later, not lost: the service is slowed, not down.
        out.update(status=DEGRADED, reason=f"scraper breaker {out['state']}")
    return out


@check("cron_lock", critical=False)
def _cron_lock(probe: Probe) -> dict:
    return probe.cron_lock.status()  # held is normal during a run; the TTL bounds a stuck one


@check("cron", critical=False)
def _cron(probe: Probe) -> dict:
    out: dict = {}
    overdue = []
    for group, run in last_runs(probe).items():
        if run is None:
            out[group] = None  # a fresh install: the scheduler check vouches for the schedule
            continue
        age = round(time.time() - datetime.fromisoformat(run["at"]).timestamp())
        out[group] = {"at": run["at"], "age_seconds": age,
                      "sections_enqueued": run.get("sections_enqueued"),
                      "duration_ms": run.get("duration_ms")}
        if age > OVERDUE_CRON_SECONDS:
            overdue.append(group)
    if overdue:
        out.update(status=DEGRADED, reason="cron overdue: " + ", ".join(overdue))
    return out


@check("deliveries", critical=False)
def _deliveries(probe: Probe) -> dict:
    with probe.postgres() as conn:
        out = db.delivery_counts(conn, overdue_after_seconds=OVERDUE_DELIVERY_SECONDS)
    if out["overdue"]:
        out.update(status=DEGRADED, reason=f"{out['overdue']} email(s) undelivered for over "
                                           f"{OVERDUE_DELIVERY_SECONDS // 60} min")
    return out


@check("capacity", critical=False)
def _capacity(probe: Probe) -> dict:
    # Throughput, backlog, drain time, late slots; degraded when a slot overran its 30 min.
    return capacity.report(probe.redis, probe.keys, huey.storage.queue_key)


@check("configuration", critical=True)
def _configuration(probe: Probe) -> dict:
    missing = missing_variables()
    out = {"missing": missing}
    if missing:
        out.update(status=UNHEALTHY, reason="missing required variables")
    return out


@check("email", critical=True)
def _email(probe: Probe) -> dict:
    s = probe.settings
    configured = bool(s.resend_api_key and s.notification_from_email)
    out = {"configured": configured, "provider": "resend"}
    if not configured:
        out.update(status=UNHEALTHY, reason="Resend key or sender address missing")
    return out


# --- running them -------------------------------------------------------------------------------

def error_text(settings: Settings, exc: BaseException) -> str:
    """One line for a JSON body: the exception's type and first line, secrets masked."""
    lines = str(exc).strip().splitlines()
    return settings.redact(f"{type(exc).__name__}: {lines[0] if lines else ''}")[:300]


def _run_one(fn: Check, probe: Probe, critical: bool) -> dict:
    try:
        out = fn(probe)
    except Exception as exc:
        return {"status": UNHEALTHY if critical else DEGRADED,
                "error": error_text(probe.settings, exc)}
    return {"status": HEALTHY, **out}


def run_checks(services, deadline: float = DEADLINE_SECONDS) -> dict:
    """Every check, concurrently, each bounded by `deadline` seconds from the start."""
    started = time.monotonic()
    timestamp = iso_from_epoch(time.time())
    probe = Probe.of(services)
    futures = {name: _pool.submit(_run_one, fn, probe, critical)
               for name, (fn, critical) in CHECKS.items()}
    wait(futures.values(), timeout=deadline)
    checks = {}
    for name, future in futures.items():
        if future.done():
            checks[name] = future.result()
        else:
            future.cancel()  # not started yet: never start it; running: its own timeout ends it
            checks[name] = {"status": UNHEALTHY if CHECKS[name][1] else DEGRADED, "error": "timeout"}
    status = max((c["status"] for c in checks.values()), key=_RANK.__getitem__, default=HEALTHY)
    return {"timestamp": timestamp, "status": status, "checks": checks,
            "response_time_ms": _ms_since(started)}


# --- the IETF draft's format --------------------------------------------------------------------

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
        ctype, measurements = _MEASUREMENTS[name]
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
