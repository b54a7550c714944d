"""The HTTP face: an explicit Bottle app with the two endpoints monitors and scripts already call.

- `GET /api/monitoring/health`: app.health.checks's report, computed at most every few seconds
  (app.health.cache) and shown in full only to a caller with the cron secret (app.health.view);
  200 healthy, 503 degraded, 500 unhealthy. `Accept: application/health+json` gets the IETF
  draft's format and its status codes (pass and warn 200, fail 503).
- `GET /api/metrics` with `Authorization: Bearer <CRON_SECRET>`: the health report's figures in
  Prometheus's text format (app.web.metrics), from the same cache; 401 without the token.
- `GET|POST /api/cron` with `Authorization: Bearer <CRON_SECRET>`: one cron run now
  (app.tasks.run_cron_now); 401 without the token, 400 for a bad `group`, 409 while another run
  holds the lock, 500 when the run fails. PostgreSQL is tried first within the health deadline, so
  a database outage answers 500 in seconds, not after the workers' pool gives up (30 s).

Bodies keep the old service's fields and texts (docs/health.md); ours are added beside them.

Every answer is JSON, unknown routes included. waitress serves it on 127.0.0.1 behind Caddy
(app.web.serving); the cron endpoint enqueues on the shared queue like the scheduler's cron slots do.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time

from bottle import Bottle, HTTPResponse, request, response

from app.health import checks, view
from app.health.cache import TTL_SECONDS as HEALTH_CACHE_SECONDS, HealthCache
from app.health.report import as_health_json
from app.schedule import cron
from app.timeutil import utcnow
from app.web import serving

log = logging.getLogger(__name__)

HEALTH_STATUS = {checks.HEALTHY: 200, checks.DEGRADED: 503, checks.UNHEALTHY: 500}
DRAFT_HTTP_STATUS = {"pass": 200, "warn": 200, "fail": 503}
HEALTH_JSON = "application/health+json"
UNAUTHORIZED = "Unauthorized - this endpoint requires authentication"  # the old service's text


def _json(status: int, payload: dict, content_type: str = "application/json",
          **headers) -> HTTPResponse:
    # Health and cron answers are live state: no cache (Caddy's included) may keep them.
    return HTTPResponse(json.dumps(payload, default=str), status=status,
                        headers={"Content-Type": content_type, "Cache-Control": "no-store",
                                 **headers})


def _authorized(secret: str) -> bool:
    scheme, _, token = request.get_header("Authorization", "").partition(" ")
    # compare_digest: the time taken says nothing about how much of the token matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), secret.encode("utf-8"))


def _first_use(make):
    """make() called once, on the first call of what this returns (thread-safe)."""
    made: list = []
    lock = threading.Lock()

    def get():
        with lock:
            if not made:
                made.append(make())
            return made[0]
    return get


def make_app(services, health_cache_seconds: float = HEALTH_CACHE_SECONDS) -> Bottle:
    """The Bottle app: health over `services`, the cron secret from its settings. A cron run goes
    through app.tasks.run_cron_now, on the process-wide services and queue, like the scheduler's cron slots.
    `health_cache_seconds`: how long one health report is served (0: every request computes)."""
    app = Bottle()
    compute = lambda: checks.run_checks(services)  # noqa: E731
    if services.settings.alerting:
        # The worker's alerts read the report this computes instead of running the checks again.
        from app.health import sharedreport

        compute = lambda: sharedreport.publish(services.redis, services.keys,  # noqa: E731
                                               checks.run_checks(services))
    cache = HealthCache(compute, ttl=health_cache_seconds)

    @_first_use
    def metrics_cache():
        # prometheus_client (~1.6 MB) loads when /api/metrics is first asked for, not at start:
        # a web process nobody scrapes never holds it (bench/memory.py)
        from app.web.metrics import MetricsCache

        return MetricsCache(services, cache, ttl=health_cache_seconds)

    @app.get("/api/monitoring/health")
    def health_endpoint():
        report = cache.get()
        if _authorized(services.settings.cron_secret):
            report = view.full_view(report)
        else:
            report = view.public_view(report)
        if HEALTH_JSON in request.get_header("Accept", "").lower():
            draft = as_health_json(report)
            return _json(DRAFT_HTTP_STATUS[draft["status"]], draft, HEALTH_JSON, Vary="Accept")
        return _json(HEALTH_STATUS[report["status"]], report, Vary="Accept")

    @app.get("/api/metrics")
    def metrics_endpoint():
        if not _authorized(services.settings.cron_secret):
            return _json(401, {"success": False, "error": UNAUTHORIZED},
                         **{"WWW-Authenticate": "Bearer"})
        metrics = metrics_cache()
        return HTTPResponse(metrics.text(), status=200,
                            headers={"Content-Type": metrics.content_type,
                                     "Cache-Control": "no-store"})

    @app.route("/api/cron", method=["GET", "POST"])
    def cron_endpoint():
        started = time.monotonic()
        if not _authorized(services.settings.cron_secret):
            return _json(401, {"success": False, "error": UNAUTHORIZED},
                         **{"WWW-Authenticate": "Bearer"})
        group = request.query.get("group") or cron.group_for(utcnow())
        if group not in cron.GROUPS:
            return _json(400, {"success": False,
                               "error": f"group must be one of: {', '.join(cron.GROUPS)}"})

        def failed(error: str, detail: str) -> HTTPResponse:
            return _json(500, {"success": False, "error": error, "detail": detail,
                               "stagger_group": group,
                               "duration": round((time.monotonic() - started) * 1000)})

        unreachable = checks.database_error(services)
        if unreachable:
            return failed("Database unavailable", unreachable)
        try:
            # imported on the first run: the checks, mail and enqueueing it brings are never used
            # by a web process that only answers health (bench/memory.py)
            from app import tasks

            return _json(200, tasks.run_cron_now(group))
        except cron.CronLocked as exc:
            lock = exc.status
            return _json(409, {
                "success": False, "error": "Another cron job is already running",
                "details": f"Lock held by {lock.get('lock_holder')} since "
                           f"{lock.get('lock_acquired_at')}, expires {lock.get('expires_at')}",
                "current_holder": lock.get("lock_holder"), "stagger_group": group, "lock": lock})
        except Exception as exc:
            log.exception("cron run from /api/cron failed")
            return failed("Cron run failed", checks.error_text(services.settings, exc))

    def error_page(err) -> str:
        # Bottle's own errors (404, 405, an unexpected exception) as JSON, never a traceback.
        response.content_type = "application/json"
        response.set_header("Cache-Control", "no-store")
        return json.dumps({"success": False, "error": err.status_line.split(" ", 1)[1]})

    for code in (400, 404, 405, 500):
        app.error(code)(error_page)
    return app


def serve(host: str, port: int) -> None:
    """`python -m app web`: serve until SIGINT/SIGTERM, let requests in flight finish, return."""
    from app.services import get_services

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("web bound to %s: Caddy is meant to be the only public face", host)
    services = get_services()
    server = serving.make_server(serving.AccessLog(make_app(services)), host, port)
    log.info("serving on http://%s:%s", host, port)
    serving.run(server)
