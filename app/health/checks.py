"""The health checks behind `GET /api/monitoring/health` and `python -m app health`.

`run_checks(services)` runs every check concurrently and returns
`{"timestamp", "status", "checks": {...}, "response_time_ms"}`; app.health.report renders the same
report in the IETF draft's format, app.health.view trims it for an anonymous caller, and
app.web.routes only maps them to HTTP.

Status rules (docs/health.md explains them to the operator):

- unhealthy (HTTP 500): the service cannot do its job. PostgreSQL or Redis unreachable (or too
  slow to answer within the deadline), a required variable missing, email not configured, or no
  heartbeat of a consumer running the scheduler for STALE_HEARTBEAT_SECONDS (no cron runs; a
  worker-only host's beat does not count).
- degraded (HTTP 503): it works, but someone should look. The scraper breaker open or half-open
  (checks are paused and retried, not lost), dead letters waiting, a cron group overdue (or
  its record missing after 70 minutes of uptime), email deliveries waiting longer than
  OVERDUE_DELIVERY_SECONDS, sections checked by something else while this service runs the
  schedule (a second scheduler), or no section checked for 70 minutes while it does not.
- healthy (HTTP 200): none of the above.

A check that raises or misses the deadline counts as failed: "unhealthy" for the critical checks
(the ones that decide "unhealthy" above), "degraded" for the others, with `"error"` saying why
("timeout" for the deadline). Every dependency call is bounded twice: clients with short timeouts
(the process's own clients wait 5 to 10 s and retry), and an overall deadline on the pool, so a hung
Redis or PostgreSQL costs DEADLINE_SECONDS, never a hung request. PostgreSQL is reached through one
small pool per process (HEALTH_POOL_SIZE connections, kept open): the URL is public, so requests
must never turn into new database sessions. No secret reaches the report: error texts pass through
`Settings.redact`, and email reports only whether it is configured.

Field names and values keep the old service's (docs/health.md lists them): breaker state upper
case with `type`, `cron_lock.time_held_ms`, `configuration.missing_vars` only when something is
missing, timestamps ending in `Z`, integer milliseconds. `@check(..., public=(...))` names the
fields an anonymous caller may see (app.health.view); everything else is for the cron secret's holder.
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
from psycopg_pool import ConnectionPool, PoolTimeout
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import db
from app.check.breaker import CircuitBreaker
from app.db import batches, checkers
from app.keys import Keys
from app.queue.deadletters import DeadLetters
from app.queue.heartbeat import STALE_SECONDS, Heartbeat, scheduler_status
from app.queue.instance import huey
from app.schedule import capacity, handover
from app.schedule.cron import OVERDUE_SECONDS, last_runs, overdue as cron_overdue
from app.schedule.lock import CronLock
from app.settings import Settings, missing_variables
from app.timeutil import iso, iso_from_epoch

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}

DEADLINE_SECONDS = 2.0  # the whole report; checks run in parallel
REDIS_TIMEOUT_SECONDS = 1.0
PG_CONNECT_TIMEOUT_SECONDS = 2  # libpq's minimum
PG_STATEMENT_TIMEOUT_MS = 1000
# Health's own PostgreSQL connections: three checks use one each at once (database, deliveries,
# schedule_owner). A caller waits at most PG_POOL_WAIT_SECONDS for one (under the deadline, so the
# error says why), and at most
# PG_POOL_MAX_WAITING callers wait at all: the rest fail at once instead of queueing.
HEALTH_POOL_SIZE = 3
PG_POOL_WAIT_SECONDS = 1.5
PG_POOL_MAX_WAITING = 8
STALE_HEARTBEAT_SECONDS = STALE_SECONDS  # app.queue.heartbeat: two missed beats and a minute of slack
OVERDUE_CRON_SECONDS = OVERDUE_SECONDS  # app.schedule.cron: one missed hourly run and ten minutes of slack
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
        """A connection of the health pool, in a transaction whose statements time out
        (SET LOCAL: safe behind a transaction pooler). The pool checks a connection before
        lending it, so a database that went away is reported, not a stale socket."""
        pool = _health_pool(self.settings.database_url)
        try:
            with pool.connection(timeout=PG_POOL_WAIT_SECONDS) as conn:
                conn.execute(f"set local statement_timeout = {PG_STATEMENT_TIMEOUT_MS}")
                yield conn
        except PoolTimeout:
            raise TimeoutError(f"no database connection within {PG_POOL_WAIT_SECONDS:g} s "
                               "(unreachable or refusing us; the web log has the reason)") from None


@lru_cache(maxsize=8)
def _health_pool(dsn: str) -> ConnectionPool:
    # Its own pool, not the workers': health can neither starve checks nor be starved by them.
    kwargs = {**db.CONNECT_KWARGS, "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
              "application_name": "seatwatch-health", "row_factory": dict_row}
    return ConnectionPool(dsn, min_size=1, max_size=HEALTH_POOL_SIZE, kwargs=kwargs,
                          check=ConnectionPool.check_connection, timeout=PG_POOL_WAIT_SECONDS,
                          max_waiting=PG_POOL_MAX_WAITING, name="seatwatch-health", open=True)


@lru_cache(maxsize=8)
def _bounded_redis(url: str) -> redis.Redis:
    # redis-py 8 retries a timed-out command 10 times with backoff by default: never here.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                retry=Retry(NoBackoff(), 0))


# --- the checks: each returns its details, with "status" when it is not healthy ---------------

Check = Callable[[Probe], dict]
CHECKS: dict[str, tuple[Check, bool]] = {}  # name -> (function, critical)
PUBLIC: dict[str, tuple[str, ...]] = {}  # name -> fields an anonymous caller sees besides status


def check(name: str, critical: bool, public: tuple[str, ...] = ()):
    """Register a check. `public`: its fields safe for anyone (no hostnames, holders or counts);
    by default an anonymous caller sees only the check's status."""
    def register(fn: Check) -> Check:
        CHECKS[name] = (fn, critical)
        PUBLIC[name] = tuple(public)
        return fn
    return register


def _ms_since(started: float) -> int:
    # Integer milliseconds, as the old service gave them.
    return round((time.monotonic() - started) * 1000)


@check("database", critical=True, public=("latency_ms",))
def _database(probe: Probe) -> dict:
    started = time.monotonic()
    with probe.postgres() as conn:
        connected = time.monotonic()
        conn.execute("select 1").fetchone()
    # connect_ms: waiting for a pooled connection (near 0 unless the pool had to reconnect).
    return {"latency_ms": _ms_since(connected), "connect_ms": round((connected - started) * 1000)}


@check("redis", critical=True, public=("latency_ms",))
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


@check("scheduler", critical=True, public=("alive", "last_heartbeat", "age_seconds", "reason"))
def _scheduler(probe: Probe) -> dict:
    # Only a beat saying `scheduler: true` counts: a worker-only host's never hides a dead one.
    # With SEATWATCH_SCHEDULER=off (the schedule runs elsewhere on purpose) any consumer's beat.
    out = scheduler_status(probe.heartbeat.beats(), required=probe.settings.scheduler)
    if not out["alive"]:
        out["status"] = UNHEALTHY
    return out


@check("circuit_breaker", critical=False,
       public=("type", "state", "failure_count", "success_count", "last_failure",
               "last_state_change", "reason"))
def _circuit_breaker(probe: Probe) -> dict:
    # The old service's values: upper-case state and the store's type (its Redis port said "redis").
    out = {"type": "redis", **probe.breaker.status()}
    out["state"] = out["state"].upper()
    if out["state"] != "CLOSED":
        # Checks are paused and retried later, not lost: the service is slowed, not down.
        out.update(status=DEGRADED, reason=f"scraper breaker {out['state']}")
    return out


@check("cron_lock", critical=False,
       public=("type", "locked", "time_held_ms", "lock_acquired_at", "expires_at"))
def _cron_lock(probe: Probe) -> dict:
    # Held is normal during a run; the TTL bounds a stuck one.
    out = {"type": "redis", **probe.cron_lock.status()}
    acquired = out["lock_acquired_at"]
    out["time_held_ms"] = (round((time.time() - datetime.fromisoformat(acquired).timestamp()) * 1000)
                           if out["locked"] and acquired else None)
    return out


@check("cron", critical=False, public=("reason",))
def _cron(probe: Probe) -> dict:
    scheduler = scheduler_status(probe.heartbeat.beats(), required=probe.settings.scheduler)
    out = cron_overdue(last_runs(probe), scheduler, time.time())
    if out.get("reason"):
        out["status"] = DEGRADED
    return out


@check("schedule_owner", critical=False, public=("state", "summary"))
def _schedule_owner(probe: Probe) -> dict:
    # Which system runs the schedule, and whether another one is seen checking sections (a second
    # scheduler: the old Workers cron brought back, a forgotten caller of the old route). One
    # indexed query over the last hour's class_states rows, cached with the report; no per-check cost.
    with probe.postgres() as conn:
        record = checkers.read_handover(conn)
        obs = checkers.observe(conn, checkers.outside_since(record), probe.settings.checker)
    verdict = handover.decide(record, obs, probe.settings.scheduler)
    out = {"state": verdict.state, "sections_checked_outside": obs.outside,
           "last_outside_check": iso(obs.last_outside_at) if obs.last_outside_at else None,
           "handover": ({"owner": record.owner, "at": iso(record.at), "by": record.by_host}
                        if record else None),
           "note": verdict.note}
    if verdict.problem:
        out.update(status=DEGRADED, reason=verdict.problem, summary=verdict.summary)
    return out


@check("deliveries", critical=False)
def _deliveries(probe: Probe) -> dict:
    # Public view: the status only (counts and reasons are for the cron secret's holder).
    with probe.postgres() as conn:
        out = batches.delivery_counts(conn, overdue_after_seconds=OVERDUE_DELIVERY_SECONDS)
    reasons = []
    refused = out.pop("refused", None)
    if refused:
        # Fixable by the operator; the emails wait (retried within Resend's idempotency window).
        out["refused_status"] = refused["status"]
        fix = ("NOTIFICATION_FROM_EMAIL (Resend refuses the `from` field)" if refused["status"] == 422
               else "RESEND_API_KEY and the sending domain")
        reasons.append(f"Resend refuses our requests (HTTP {refused['status']}): {out['pending']} "
                       f"email(s) waiting; check {fix}; last: {(refused['error'] or '')[:160]}")
    if out["failed"]:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in out["last_24h"].items())
        top = out["reasons"][0]
        reasons.append(f"not delivered in the last 24 h: {counts} (most: {top['reason'][:160]}; "
                       "`python -m app status`)")
    if out["overdue"]:
        reasons.append(f"{out['overdue']} email(s) undelivered for over "
                       f"{OVERDUE_DELIVERY_SECONDS // 60} min")
    if reasons:
        out.update(status=DEGRADED, reason="; ".join(reasons))
    return out


@check("capacity", critical=False)
def _capacity(probe: Probe) -> dict:
    # Throughput, backlog, drain time, late slots; degraded when a slot overran its 30 min.
    return capacity.report(probe.redis, probe.keys, huey.storage.queue_key)


@check("configuration", critical=True, public=("missing_vars", "missing", "reason"))
def _configuration(probe: Probe) -> dict:
    missing = missing_variables()
    out = {"missing": missing}
    if missing:
        # missing_vars: the old service's field, present only when something is missing.
        out.update(status=UNHEALTHY, reason="missing required variables", missing_vars=missing)
    return out


@check("email", critical=True, public=("configured", "provider", "reason"))
def _email(probe: Probe) -> dict:
    s = probe.settings
    configured = bool(s.resend_api_key and s.notification_from_email)
    out = {"configured": configured, "provider": s.mailer}  # "outbox" in dev mode: no email leaves
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
    timestamp = iso_from_epoch(time.time())  # when the checks ran (a cached report keeps it)
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


def database_error(services, deadline: float = DEADLINE_SECONDS) -> str | None:
    """None when PostgreSQL answers the database check within `deadline`, else why not
    (for /api/cron: fail in seconds instead of waiting on the workers' pool)."""
    fn, critical = CHECKS["database"]
    future = _pool.submit(_run_one, fn, Probe.of(services), critical)
    try:
        result = future.result(timeout=deadline)
    except TimeoutError:
        future.cancel()
        return "timeout"
    return result.get("error")
