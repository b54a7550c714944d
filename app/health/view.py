"""What a health caller may see: everything with the cron secret, less without it.

The health URL is public. An anonymous caller gets each check's status, its `error` reduced to
the exception's bare type name, and only the fields its check declared public (`@check(...,
public=...)`), where a `reason` becomes a fixed phrase (PUBLIC_REASONS): a reason's own text is
built from what the check found (a worker host's name, an address, a library's message) and is
for the cron secret's holders only. Any other public field that is a string must look like the
value it is (an ISO timestamp, a state or variable name, a plain phrase of words without digits,
dots, hyphens or slashes, such as a check's own fixed summary): whatever else shows up there (a
host name, an address, a path, a release id) is withheld. A caller presenting the cron secret
(`Authorization: Bearer $CRON_SECRET`) gets the whole report. Either way `view` says which.
"""

from __future__ import annotations

import re

from app.health.checks import PUBLIC

FULL, PUBLIC_VIEW = "full", "public"
WITHHELD = "withheld"

PUBLIC_REASONS = {
    "scheduler": "no live scheduler heartbeat",
    "circuit_breaker": "the scraper's circuit breaker is not closed",
    "cron": "a cron slot is overdue",
    "configuration": "required variables are missing",
    "email": "email sending is not configured",
}
# An ISO 8601 UTC timestamp, an enum-like word (CLOSED, redis, resend), a variable's name, or a
# plain phrase (letters, spaces and sentence punctuation: no digit, dot, slash, hyphen, @ or _).
_SAFE_STRING = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z|[A-Za-z][A-Za-z_]{0,39}"
                          r"|[A-Za-z][A-Za-z ,:;?!'()]{0,199}")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")


def public_view(report: dict) -> dict:
    checks = {}
    for name, result in report["checks"].items():
        shown = {"status": result["status"]}
        for key in PUBLIC.get(name, ()):
            if key in result:
                shown[key] = _public_value(name, key, result[key], result["status"])
        if "error" in result:
            shown["error"] = _error_type(result["error"])
        checks[name] = shown
    return {**report, "checks": checks, "view": PUBLIC_VIEW}


def _public_value(check: str, key: str, value, status: str):
    if key == "reason":
        return PUBLIC_REASONS.get(check, f"{check} is {status}") if value else value
    if isinstance(value, str):
        return value if _SAFE_STRING.fullmatch(value) else WITHHELD
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) and _SAFE_STRING.fullmatch(v) else WITHHELD
                for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return WITHHELD


def _error_type(error: str) -> str:
    # "OperationalError: connection to server at 10.0.0.5 ..." -> "OperationalError";
    # "psycopg.errors.Foo: ..." -> "Foo" (no module path either).
    head = str(error).split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return head if _TYPE_NAME.fullmatch(head) else "error"


def full_view(report: dict) -> dict:
    return {**report, "view": FULL}
