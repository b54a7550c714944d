"""The HTTP endpoints: through the WSGI app directly, and through a real waitress process."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from wsgiref.util import setup_testing_defaults

import pytest

from app.health import checks
from app.queue.instance import huey
from app.web import routes, serving
from tests.deadends import HungServer, assert_no_secrets, closed_port, pg_url, redis_url, services_with


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def call(app, method: str, path: str, headers: dict | None = None, query: str = "") -> Answer:
    """One request through a WSGI app, the way a server would make it."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query,
                   **{"wsgi.input": io.BytesIO(b"")})
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen = {}

    def start_response(status, hdrs, exc_info=None):
        seen.update(status=int(status.split(" ", 1)[0]), headers={k.lower(): v for k, v in hdrs})

    body = b"".join(app(environ, start_response))
    return Answer(seen["status"], seen["headers"], body)


@pytest.fixture
def app(services):
    services.heartbeat.beat()
    huey.storage.flush_queue()
    return routes.make_app(services, health_cache_seconds=0)  # each request sees the state it set up


def bearer(services) -> dict:
    return {"Authorization": f"Bearer {services.settings.cron_secret}"}


def assert_clean(answer: Answer, *services) -> None:
    assert answer.headers["content-type"].startswith(("application/json", "application/health+json"))
    assert_no_secrets(answer.body.decode(), *services)


# --- health ------------------------------------------------------------------------------------

def test_health_200_when_healthy(app, services):
    answer = call(app, "GET", "/api/monitoring/health")
    assert answer.status == 200 and answer.json["status"] == "healthy"
    assert set(answer.json) == {"timestamp", "status", "checks", "response_time_ms", "cache_age_ms", "view"}
    assert answer.json["view"] == "public"
    assert answer.headers["cache-control"] == "no-store"
    assert_clean(answer, services)


def test_anonymous_callers_see_less_than_the_cron_secret(app, services):
    services.dead_letters.add("2261", "12430", reason="HTTP 500", attempts=4)
    lock = services.cron_lock.acquire()
    try:
        anonymous = call(app, "GET", "/api/monitoring/health").json
        wrong = call(app, "GET", "/api/monitoring/health", {"Authorization": "Bearer nope"}).json
        full = call(app, "GET", "/api/monitoring/health", bearer(services)).json
    finally:
        services.cron_lock.release(lock)
    assert (anonymous["view"], wrong["view"], full["view"]) == ("public", "public", "full")
    assert anonymous["status"] == full["status"] == "degraded"
    a, f = anonymous["checks"], full["checks"]
    assert set(a) == set(f)  # every check is listed for everyone, with its status
    assert all(a[name]["status"] == f[name]["status"] for name in f)
    # Hostnames, the lock holder and counts: only with the secret.
    assert f["scheduler"]["host"] and "host" not in a["scheduler"]
    assert f["cron_lock"]["lock_holder"] and "lock_holder" not in a["cron_lock"]
    assert a["cron_lock"]["locked"] is True and a["cron_lock"]["time_held_ms"] >= 0
    assert f["queue"]["dead_letters"] == 1 and set(a["queue"]) == {"status"}
    assert "pending" in f["deliveries"] and set(a["deliveries"]) == {"status"}
    # The old service's public fields stay public.
    assert a["circuit_breaker"]["state"] == "CLOSED" and "failure_count" in a["circuit_breaker"]
    assert a["database"]["latency_ms"] >= 0 and a["email"]["configured"] is True
    body = json.dumps(anonymous)
    assert os.uname().nodename not in body
    assert_no_secrets(body + json.dumps(full), services)


def test_errors_shown_to_anonymous_callers_are_only_a_type(services):
    services.heartbeat.beat()
    bad = services_with(services, redis_url=redis_url(closed_port()))
    app = routes.make_app(bad, health_cache_seconds=0)
    anonymous = call(app, "GET", "/api/monitoring/health").json["checks"]["redis"]
    full = call(app, "GET", "/api/monitoring/health", bearer(bad)).json["checks"]["redis"]
    assert anonymous["error"] == "ConnectionError" and full["error"].startswith("ConnectionError: ")
    assert "127.0.0.1" in full["error"] and "127.0.0.1" not in json.dumps(anonymous)


def test_health_report_is_cached_with_its_age(services):
    services.heartbeat.beat()
    app = routes.make_app(services, health_cache_seconds=60)
    first = call(app, "GET", "/api/monitoring/health").json
    for _ in range(10):
        services.breaker.record_failure()  # degraded now, but the cached report still says healthy
    time.sleep(0.05)
    again = call(app, "GET", "/api/monitoring/health").json
    assert first["status"] == again["status"] == "healthy"
    assert again["timestamp"] == first["timestamp"] and again["cache_age_ms"] >= 50
    assert first["cache_age_ms"] < again["cache_age_ms"]
    fresh = call(routes.make_app(services, health_cache_seconds=0), "GET", "/api/monitoring/health").json
    assert fresh["status"] == "degraded" and fresh["cache_age_ms"] == 0


def test_health_503_when_degraded(app, services):
    for _ in range(10):
        services.breaker.record_failure()
    answer = call(app, "GET", "/api/monitoring/health")
    assert answer.status == 503 and answer.json["status"] == "degraded"
    assert answer.json["checks"]["circuit_breaker"]["state"] == "OPEN"
    assert_clean(answer, services)


def test_health_500_when_unhealthy(app, services):
    services.redis.delete(services.keys.heartbeat)
    answer = call(app, "GET", "/api/monitoring/health")
    assert answer.status == 500 and answer.json["status"] == "unhealthy"
    assert_clean(answer, services)


@pytest.mark.parametrize("down", ["redis", "database"])
def test_health_500_when_a_store_is_down(services, down):
    services.heartbeat.beat()
    change = ({"redis_url": redis_url(closed_port())} if down == "redis"
              else {"database_url": pg_url(closed_port())})
    bad = services_with(services, **change)
    answer = call(routes.make_app(bad, health_cache_seconds=0), "GET", "/api/monitoring/health")
    assert answer.status == 500 and answer.json["checks"][down]["status"] == "unhealthy"
    assert_clean(answer, services, bad)


def test_health_json_form(app, services):
    accept = {"Accept": "application/health+json"}
    ok = call(app, "GET", "/api/monitoring/health", accept)
    assert ok.status == 200 and ok.json["status"] == "pass"
    assert ok.headers["content-type"] == "application/health+json" and ok.headers["vary"] == "Accept"
    assert "redis:responseTime" in ok.json["checks"]
    services.dead_letters.add("2261", "12430", reason="x", attempts=4)
    warn = call(app, "GET", "/api/monitoring/health", accept)
    assert warn.status == 200 and warn.json["status"] == "warn"  # the draft: warn is a 2xx
    services.redis.delete(services.keys.heartbeat)
    fail = call(app, "GET", "/api/monitoring/health", {"Accept": "application/json, application/health+json"})
    assert fail.status == 503 and fail.json["status"] == "fail"
    for answer in (ok, warn, fail):
        assert_clean(answer, services)


# --- cron --------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"},
])
def test_cron_401_without_the_token(app, services, headers):
    answer = call(app, "POST", "/api/cron", headers)
    assert answer.status == 401 and answer.json == {
        "success": False, "error": "Unauthorized - this endpoint requires authentication"}
    assert answer.headers["www-authenticate"] == "Bearer"
    assert huey.pending_count() == 0


def test_cron_401_for_the_token_as_basic_scheme(app, services):
    answer = call(app, "GET", "/api/cron", {"Authorization": f"Basic {services.settings.cron_secret}"})
    assert answer.status == 401
    assert_clean(answer, services)


def test_cron_200_enqueues_the_group(app, services, make_watch):
    make_watch("a@asu.edu", "12430")
    make_watch("b@asu.edu", "12431")
    answer = call(app, "POST", "/api/cron", bearer(services), query="group=even")
    assert answer.status == 200, answer.body
    body = answer.json
    assert body["success"] is True and body["sections_enqueued"] == 1
    assert body["stagger_group"] == "even" and isinstance(body["duration"], int)
    assert huey.pending_count() == 1
    # The scheme is case-insensitive; GET works as well as POST.
    odd = call(app, "GET", "/api/cron", {"Authorization": f"bearer {services.settings.cron_secret}"},
               query="group=odd")
    assert odd.status == 200 and odd.json["stagger_group"] == "odd" and odd.json["sections_enqueued"] == 1
    assert_clean(answer, services)


def test_cron_200_with_nothing_due(app, services):
    answer = call(app, "GET", "/api/cron", bearer(services))
    assert answer.status == 200
    assert answer.json["message"] == "No sections to check" and answer.json["sections_enqueued"] == 0
    minute = time.gmtime().tm_min
    expected = "even" if minute < 30 else "odd"
    assert answer.json["stagger_group"] in (expected, "odd" if expected == "even" else "even")


def test_cron_400_for_another_group(app, services):
    answer = call(app, "POST", "/api/cron", bearer(services), query="group=all")
    assert answer.status == 400 and answer.json["success"] is False and "even, odd" in answer.json["error"]


def test_cron_409_while_a_run_holds_the_lock(app, services):
    lock = services.cron_lock.acquire()
    try:
        answer = call(app, "POST", "/api/cron", bearer(services), query="group=even")
    finally:
        services.cron_lock.release(lock)
    assert answer.status == 409 and answer.json["success"] is False
    assert answer.json["error"] == "Another cron job is already running"
    held = answer.json["lock"]
    assert answer.json["current_holder"] == held["lock_holder"] and held["lock_holder"] in answer.json["details"]
    assert held["locked"] is True and held["lock_holder"] and held["expires_at"]
    assert_clean(answer, services)
    # The slot was given back: once the lock is free the same slot runs.
    assert call(app, "POST", "/api/cron", bearer(services), query="group=even").status == 200


def test_cron_500_when_the_run_fails(app, services, sql):
    sql("alter function public.get_sections_to_check(text) rename to get_sections_to_check_gone")
    try:
        answer = call(app, "POST", "/api/cron", bearer(services), query="group=odd")
    finally:
        sql("alter function public.get_sections_to_check_gone(text) rename to get_sections_to_check")
    assert answer.status == 500
    body = answer.json
    assert body["success"] is False and body["error"] == "Cron run failed"
    assert body["detail"].startswith("UndefinedFunction") and body["stagger_group"] == "odd"
    assert isinstance(body["duration"], int)
    assert_clean(answer, services)


@pytest.mark.parametrize("hung", [False, True])
def test_cron_500_quickly_when_the_database_is_down(services, hung):
    services.heartbeat.beat()
    with HungServer() as server:
        port = server.port if hung else closed_port()
        bad = services_with(services, database_url=pg_url(port))
        started = time.monotonic()
        answer = call(routes.make_app(bad), "POST", "/api/cron", bearer(bad), query="group=even")
        took = time.monotonic() - started
    assert answer.status == 500 and answer.json["error"] == "Database unavailable"
    assert "timeout" in answer.json["detail"].lower() and answer.json["success"] is False
    assert took < checks.DEADLINE_SECONDS + 0.5, took  # the health deadline, not the 30 s pool wait
    assert isinstance(answer.json["duration"], int)
    assert_clean(answer, services, bad)


# --- everything else ---------------------------------------------------------------------------

def test_unknown_route_and_method_are_json(app):
    missing = call(app, "GET", "/nope")
    assert missing.status == 404 and missing.json == {"success": False, "error": "Not Found"}
    assert missing.headers["content-type"] == "application/json"
    wrong = call(app, "DELETE", "/api/cron")
    assert wrong.status == 405 and wrong.json["success"] is False


def test_access_log_is_one_line_without_the_query(app, services):
    out = io.StringIO()
    logged = serving.AccessLog(app, stream=out)
    call(logged, "POST", "/api/cron", query="group=even&token=" + services.settings.cron_secret)
    call(logged, "GET", "/a\nforged 200")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[1:4] == ["POST", "/api/cron", "401"] and lines[0].endswith("ms")
    assert lines[1].split()[1:4] == ["GET", "/a%0Aforged%20200", "404"]
    assert_no_secrets(out.getvalue(), services)


# --- a real waitress process -------------------------------------------------------------------

class WebProcess:
    """`python -m app web` on a free port, its stdout in a file."""

    def __init__(self, tmp_path, **env):
        self.port = closed_port()
        self.out = open(tmp_path / f"web-{self.port}.out", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "web", "--port", str(self.port)],
            env={**os.environ, **env}, stdout=self.out, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"web did not start: {self.proc.stderr.read()}")
                time.sleep(0.05)

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple[Answer, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        started = time.monotonic()
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        conn.close()
        return answer, time.monotonic() - started

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.out.seek(0)
        return code, self.out.read(), self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def web_process(services, tmp_path):
    services.heartbeat.beat()
    proc = WebProcess(tmp_path)
    yield proc
    proc.kill()


def test_real_server_answers_without_a_server_banner(web_process, services):
    health, took = web_process.request("GET", "/api/monitoring/health")
    assert health.status == 200 and health.json["status"] == "healthy"
    missing, _ = web_process.request("GET", "/nope?x=1")
    unauthorized, _ = web_process.request("POST", "/api/cron")
    ok, _ = web_process.request("POST", "/api/cron?group=odd", bearer(services))
    assert (missing.status, unauthorized.status, ok.status) == (404, 401, 200)
    for answer in (health, missing, unauthorized, ok):
        assert "server" not in answer.headers and "via" not in answer.headers
        assert_clean(answer, services)
    # waitress's own error page (a malformed request) names no server either.
    with socket.create_connection(("127.0.0.1", web_process.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 400") and "waitress" not in reply.lower()
    code, stdout, stderr = web_process.stop()
    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert [line.split()[1:4] for line in lines] == [
        ["GET", "/api/monitoring/health", "200"], ["GET", "/nope", "404"],
        ["POST", "/api/cron", "401"], ["POST", "/api/cron", "200"]]
    assert_no_secrets(stdout + stderr, services)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_lets_the_request_in_flight_finish(services, tmp_path, sig):
    """A hung database makes health take its full deadline: stop in the middle of it."""
    services.heartbeat.beat()
    with HungServer() as hung:
        proc = WebProcess(tmp_path, DATABASE_URL=pg_url(hung.port))
        try:
            result = {}
            client = threading.Thread(target=lambda: result.update(
                zip(("answer", "took"), proc.request("GET", "/api/monitoring/health"))))
            client.start()
            time.sleep(0.5)
            code, stdout, stderr = proc.stop(sig)
            client.join(10)
        finally:
            proc.kill()
    answer = result["answer"]
    assert answer.status == 500 and "timeout" in answer.json["checks"]["database"]["error"].lower()
    assert result["took"] < 3.5  # bounded by the health deadline, stop or no stop
    assert code == 0, stderr
    assert "/api/monitoring/health 500" in stdout
    assert_no_secrets(answer.body.decode() + stdout + stderr, services)


WEB_AT_REST = """
import io, json, sys
from wsgiref.util import setup_testing_defaults
from app.services import get_services
from app.settings import get_settings
from app.web import routes

app = routes.make_app(get_services())
loaded = lambda: {m: m in sys.modules for m in ("prometheus_client", "app.tasks", "app.check.run")}
seen = {"rest": loaded()}
for path in ("/api/metrics", "/api/cron"):
    environ = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="group=nope",
                   HTTP_AUTHORIZATION="Bearer " + get_settings().cron_secret,
                   **{"wsgi.input": io.BytesIO(b"")})
    b"".join(app(environ, lambda status, headers, exc_info=None: None))
    seen[path] = loaded()
print(json.dumps(seen))
"""


def test_the_web_loads_metrics_and_the_cron_run_on_first_use_not_at_start(services):
    """What a web process that only answers health never uses stays out of it (issue 20's memory):
    prometheus_client until /api/metrics is first asked for, the checks and enqueueing until the
    first /api/cron run."""
    out = subprocess.run([sys.executable, "-c", WEB_AT_REST], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["rest"] == {"prometheus_client": False, "app.tasks": False, "app.check.run": False}
    assert seen["/api/metrics"]["prometheus_client"] is True
    assert seen["/api/metrics"]["app.tasks"] is False
    # a bad group is answered before any run: still nothing of the checks loaded
    assert seen["/api/cron"]["app.tasks"] is False
