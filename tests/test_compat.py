"""The health and cron JSON against the old service's field list (tests/fixtures, from docs/health.md).

Each scenario is set up for real (Redis state, a down database) and requested through the web app,
both anonymously and with the cron secret. Every old field must be there with the old type and
value form; new fields may appear beside them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.web import routes
from tests.deadends import closed_port, pg_url, services_with
from tests.test_web import bearer, call

FIELDS = json.loads((Path(__file__).parent / "fixtures" / "old_service_fields.json").read_text())
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$")
HEALTH = "/api/monitoring/health"


def conforms(value, spec: str) -> bool:
    for kind in spec.split("|") if not spec.startswith("enum:") else [spec]:
        if kind.startswith("enum:") and value in kind[5:].split("|"):
            return True
        if (kind == "null" and value is None or kind == "str" and isinstance(value, str)
                or kind == "int" and isinstance(value, int) and not isinstance(value, bool)
                or kind == "bool" and isinstance(value, bool) or kind == "list" and isinstance(value, list)
                or kind == "object" and isinstance(value, dict)
                or kind == "iso" and isinstance(value, str) and ISO_Z.match(value)):
            return True
    return False


def assert_fields(body: dict, spec: dict, where: str, skip: tuple = ()) -> None:
    for name, kind in spec.items():
        if f"{where}.{name}" in skip:
            continue
        assert name in body, f"{where}.{name} missing: {body}"
        assert conforms(body[name], kind), f"{where}.{name} = {body[name]!r} is not {kind}"


def assert_old_health(body: dict, anonymous: bool) -> None:
    spec = FIELDS["health"]
    skip = tuple(spec["withheld_from_anonymous"]) if anonymous else ()
    assert_fields(body, spec["top"], "top")
    for check, fields in spec["checks"].items():
        assert_fields(body["checks"][check], fields, check, skip)
    db = body["checks"]["database"]
    extra = spec["when_failed"] if "error" in db else spec["when_healthy"]
    assert_fields(db, extra["database"], "database")
    configuration = body["checks"]["configuration"]
    if configuration["status"] == "healthy":
        assert "missing_vars" not in configuration  # omitted when empty, as the old service did
    else:
        assert_fields(configuration, spec["when_missing"]["configuration"], "configuration")
    if anonymous:
        for path in spec["withheld_from_anonymous"]:
            check, field = path.split(".")
            assert field not in body["checks"][check]


def both_views(app, services) -> list[tuple[int, dict, bool]]:
    anonymous = call(app, "GET", HEALTH)
    full = call(app, "GET", HEALTH, bearer(services))
    assert anonymous.status == full.status
    return [(anonymous.status, anonymous.json, True), (full.status, full.json, False)]


@pytest.fixture
def live(services):
    services.heartbeat.beat()
    return services


def scenario_healthy(s):
    return s


def scenario_breaker_open(s):
    for _ in range(10):
        s.breaker.record_failure()
    return s


def scenario_breaker_half_open(s):
    s.redis.hset(s.keys.breaker, mapping={"state": "half_open", "failures": 10, "last_state_change": 1_700_000_000_000})
    return s


def scenario_unhealthy(s):
    s.redis.delete(s.keys.heartbeat)  # no consumer: nothing gets checked
    return s


def scenario_lock_held(s):
    s.cron_lock.acquire()  # expires by its TTL; the services fixture flushes Redis anyway
    return s


def scenario_database_down(s):
    return services_with(s, database_url=pg_url(closed_port()))


def scenario_configuration_missing(s, monkeypatch):
    monkeypatch.delenv("SCRAPER_SECRET_TOKEN")
    return s


SCENARIOS = {
    # name: (set-up, HTTP status, overall status, expected old values)
    "healthy": (scenario_healthy, 200, "healthy", {"circuit_breaker": {"state": "CLOSED"}, "cron_lock": {"locked": False}}),
    "breaker_open": (scenario_breaker_open, 503, "degraded", {"circuit_breaker": {"state": "OPEN", "failure_count": 10}}),
    "breaker_half_open": (scenario_breaker_half_open, 503, "degraded", {"circuit_breaker": {"state": "HALF_OPEN"}}),
    "unhealthy": (scenario_unhealthy, 500, "unhealthy", {}),
    "lock_held": (scenario_lock_held, 200, "healthy", {"cron_lock": {"locked": True}}),
    "database_down": (scenario_database_down, 500, "unhealthy", {"database": {"status": "unhealthy"}}),
    "configuration_missing": (scenario_configuration_missing, 500, "unhealthy",
                              {"configuration": {"missing_vars": ["SCRAPER_SECRET_TOKEN"]}}),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_health_keeps_the_old_fields(live, monkeypatch, name):
    setup, http, status, values = SCENARIOS[name]
    services = setup(live, monkeypatch) if name == "configuration_missing" else setup(live)
    app = routes.make_app(services, health_cache_seconds=0)
    for code, body, anonymous in both_views(app, services):
        assert (code, body["status"]) == (http, status), body
        assert_old_health(body, anonymous)
        for check, expected in values.items():
            for field, value in expected.items():
                assert body["checks"][check][field] == value, (check, field, body["checks"][check])
        if name == "lock_held":
            lock = body["checks"]["cron_lock"]
            assert lock["time_held_ms"] >= 0 and lock["lock_acquired_at"] and lock["expires_at"]
            assert (lock.get("lock_holder") is None) == anonymous


def test_cron_keeps_the_old_fields(live):
    app = routes.make_app(live)
    spec = FIELDS["cron"]
    unauthorized = call(app, "POST", "/api/cron")
    assert unauthorized.status == 401
    assert_fields(unauthorized.json, spec["401"], "401")
    assert unauthorized.json["error"] == spec["texts"]["401"]
    ok = call(app, "POST", "/api/cron", bearer(live), query="group=even")
    assert ok.status == 200 and ok.json["message"] == "No sections to check"
    assert_fields(ok.json, spec["200"], "200")
    lock = live.cron_lock.acquire()
    try:
        held = call(app, "POST", "/api/cron", bearer(live), query="group=odd")
    finally:
        live.cron_lock.release(lock)
    assert held.status == 409
    assert_fields(held.json, spec["409"], "409")
    down = services_with(live, database_url=pg_url(closed_port()))
    failed = call(routes.make_app(down), "POST", "/api/cron", bearer(down), query="group=odd")
    assert failed.status == 500
    assert_fields(failed.json, spec["500"], "500")
    for answer in (unauthorized, ok, held, failed):
        assert answer.json["success"] is (answer.status == 200)
