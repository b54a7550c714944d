"""What a health caller may see: everything with the cron secret, less without it.

The health URL is public. An anonymous caller gets each check's status, its `error` reduced to
the exception's type, and only the fields its check declared public (`@check(..., public=...)`):
no hostnames, no lock holder, no queue or delivery counts. A caller presenting the cron secret
(`Authorization: Bearer $CRON_SECRET`) gets the whole report. Either way `view` says which.
"""

from __future__ import annotations

from app.health.checks import PUBLIC

FULL, PUBLIC_VIEW = "full", "public"


def public_view(report: dict) -> dict:
    checks = {}
    for name, result in report["checks"].items():
        shown = {"status": result["status"]}
        shown.update({k: result[k] for k in PUBLIC.get(name, ()) if k in result})
        if "error" in result:
            # "OperationalError: connection to server at 10.0.0.5 ..." -> "OperationalError".
            shown["error"] = result["error"].split(":", 1)[0]
        checks[name] = shown
    return {**report, "checks": checks, "view": PUBLIC_VIEW}


def full_view(report: dict) -> dict:
    return {**report, "view": FULL}
