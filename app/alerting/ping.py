"""The dead man's switch: a GET of SEATWATCH_PING_URL each time a slot's work is done.

healthchecks.io's convention (and that of the self-hosted services that copy it): `<url>` says
"ran fine", `<url>/fail` says "ran and failed"; the outside service alerts when the pings stop
coming, which is the one alert that still works when this VPS is down.

- A slot finished (app.tasks, when app.schedule.capacity closes it): `<url>`, or `<url>/fail` when more
  than half of its checks failed.
- A cron run that had nothing to enqueue also pings `<url>` (its slot is done at once), so a
  quiet service keeps its two pings an hour and the monitor stays calm.
- A cron run that raised (database down, Redis gone): `<url>/fail`.

A ping is one GET, bounded by PING_TIMEOUT_SECONDS, on a thread of its own (a slot's last check
never waits for it), never retried: a lost ping is what the outside monitor is for. The URL
holds the check's secret id, so it is never logged.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 5


def slot_finished(settings, figures: dict) -> threading.Thread | None:
    failed = figures["failed"] > figures["sections"] / 2
    return _ping(settings, fail=failed, what=f"slot {figures['slot']}")


def cron_done(settings, result: dict) -> threading.Thread | None:
    """After a cron run: only one that enqueued nothing pings (the others ping as their slot
    finishes); a skipped run (the slot already ran) does not."""
    if result.get("skipped") or result.get("sections_enqueued"):
        return None
    return _ping(settings, fail=False, what=f"cron {result.get('stagger_group')} (nothing to do)")


def cron_failed(settings) -> threading.Thread | None:
    return _ping(settings, fail=True, what="cron run")


def _ping(settings, fail: bool, what: str) -> threading.Thread | None:
    if not settings.ping_url:
        return None
    url = settings.ping_url + ("/fail" if fail else "")
    thread = threading.Thread(target=_get, args=(url, what, fail), daemon=True, name="ping")
    thread.start()
    return thread


def _get(url: str, what: str, fail: bool) -> None:
    # The standard library's client: 0.4 MB against requests' 5 MB in a worker that has not
    # scraped yet (bench/memory.py's idle worker); a GET needs nothing more.
    import urllib.error
    import urllib.request

    kind = "fail" if fail else "ok"
    request = urllib.request.Request(url, headers={"User-Agent": "seatwatch-ping"})
    try:
        with urllib.request.urlopen(request, timeout=PING_TIMEOUT_SECONDS) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, a bad answer
        log.warning("ping (%s) after %s not delivered: %s", kind, what, type(exc).__name__)
        return
    if not 200 <= status < 300:
        log.warning("ping (%s) after %s answered HTTP %d", kind, what, status)
    else:
        log.info("ping (%s) after %s", kind, what)
