"""The dead man's switch: a GET of SEATWATCH_PING_URL each time a slot's work is done.

healthchecks.io's convention (and that of the self-hosted services that copy it): `<url>` says
"ran fine", `<url>/fail` says "ran and failed"; the outside service alerts when the pings stop
coming, which is the one alert that still works when this VPS is down.

- A slot finished (app.tasks, when app.schedule.capacity closes it): `<url>`, or `<url>/fail` when more
  than half of its checks failed.
- A cron run that found no section to check also pings `<url>` (its slot is done at once), so a
  quiet service keeps its two pings an hour and the monitor stays calm.
- A cron run that found sections but queued none of them ("every section is already waiting or
  running": the queue is stuck, nothing of this slot gets checked) pings `<url>/fail`: the
  monitor alerts at once rather than after its grace.
- A cron run that raised (database down, Redis gone): `<url>/fail`.

Where "/fail" goes (fail_url): into the path, before any query string, so that
`https://hc-ping.com/<uuid>?rid=1` becomes `https://hc-ping.com/<uuid>/fail?rid=1`. An Uptime Kuma
push URL (`.../api/push/<token>?status=up&msg=OK&ping=`) says failure with `status=down` instead
(Kuma's route takes no "/fail"): a URL whose query has `status=up` gets `status=down`.

A ping is one GET, bounded by PING_TIMEOUT_SECONDS in all (connect and a trickling answer
alike), on a thread of its own (a slot's last check never waits for it), never retried: a lost
ping is what the outside monitor is for. A short-lived process (`python -m app cron`) waits for
its pings with `flush` before it exits. The URL holds the check's secret id, so it is never logged.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 5

_sent: list[threading.Thread] = []
_sent_lock = threading.Lock()


def slot_finished(settings, figures: dict) -> threading.Thread | None:
    failed = figures["failed"] > figures["sections"] / 2
    return _ping(settings, fail=failed, what=f"slot {figures['slot']}")


def cron_done(settings, result: dict) -> threading.Thread | None:
    """After a cron run: a run with nothing due pings ok; a run that found sections and queued
    none pings fail (nothing of its slot will be checked); a run that queued checks pings
    nothing (its slot pings as it finishes); a skipped run (the slot already ran) does not."""
    if result.get("skipped") or result.get("sections_enqueued"):
        return None
    group = result.get("stagger_group")
    if result.get("sections_found"):
        return _ping(settings, fail=True,
                     what=f"cron {group} (sections due, none queued: all still waiting or running)")
    return _ping(settings, fail=False, what=f"cron {group} (nothing to do)")


def cron_failed(settings) -> threading.Thread | None:
    return _ping(settings, fail=True, what="cron run")


def fail_url(url: str) -> str:
    """`url` saying "failed" (see the module's docstring)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "status" and v == "up" for k, v in query):  # Uptime Kuma's push URL
        query = [(k, "down" if k == "status" else v) for k, v in query]
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


def flush(timeout: float = PING_TIMEOUT_SECONDS + 1) -> None:
    """Wait (at most `timeout` in all) for this process's pings still on their way."""
    import time

    deadline = time.monotonic() + timeout
    with _sent_lock:
        threads = list(_sent)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _ping(settings, fail: bool, what: str) -> threading.Thread | None:
    if not settings.ping_url:
        return None
    url = fail_url(settings.ping_url) if fail else settings.ping_url
    thread = threading.Thread(target=_get, args=(url, what, fail), daemon=True, name="ping")
    with _sent_lock:
        _sent[:] = [t for t in _sent if t.is_alive()]
        _sent.append(thread)
    thread.start()
    return thread


def _get(url: str, what: str, fail: bool) -> None:
    # urllib3 through app.httpdeadline, the stack the worker already has loaded for the scraper:
    # the whole GET ends within PING_TIMEOUT_SECONDS whatever the peer does
    from app.httpdeadline import DeadlineExceeded, failure_name, shared_client

    kind = "fail" if fail else "ok"
    try:
        status = shared_client(PING_TIMEOUT_SECONDS, 64 * 1024).request(
            "GET", url, headers={"User-Agent": "seatwatch-ping"}).status
    except DeadlineExceeded:
        log.warning("ping (%s) after %s not delivered: no answer within %d s", kind, what,
                    PING_TIMEOUT_SECONDS)
        return
    except Exception as exc:  # noqa: BLE001  refused, unreachable, reset, a bad answer
        log.warning("ping (%s) after %s not delivered: %s", kind, what, failure_name(exc))
        return
    if not 200 <= status < 300:
        log.warning("ping (%s) after %s answered HTTP %d", kind, what, status)
    else:
        log.info("ping (%s) after %s", kind, what)
