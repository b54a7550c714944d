"""Log lines while Redis or PostgreSQL is unreachable: one when it goes, a short one a minute at
most while it stays away, one when it is back; one line (no traceback) for a check that failed for a
known reason. Tracebacks stay for the unexpected.

Without this a worker under a stopped Redis wrote 124 multi-line tracebacks in the first minute
(each of huey's 4 workers' "Error reading from queue", its scheduler, every housekeeping job), then
about 16 a minute: a megabyte in 2.5 minutes, and the one line that matters lost in it. And each
check failed by the scraper printed huey's 18-line traceback for a failure already counted.

`OutageFilter` sits on the handlers (a logger's filter would miss its children's records): it
looks at each record's exception (its exc_info, or one among its arguments, and their causes):
- a connection error of redis-py, or psycopg's OperationalError / the pool's PoolTimeout: an outage
  of that service. The first record becomes "Redis unreachable: <type>: <first line>", the others
  are dropped but for "Redis still unreachable for N s (K errors not shown)" once a minute; a
  thread then probes the service every PROBE_SECONDS (a PING, a connection; only during the
  outage) and logs "Redis reachable again after N s" with the time from the first error.
- a known failure (KNOWN: a check the scraper failed, the breaker open): the record keeps its
  message plus the reason, on one line, without the traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("app.outages")

REPEAT_SECONDS = 60
PROBE_SECONDS = 5
FIRST_LINE_CHARS = 200
KNOWN = ("app.check.run.CheckFailed", "app.check.breaker.BreakerOpen",
         "app.check.scraper.ScraperError")


def _qualname(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def service_of(exc: BaseException) -> str | None:
    """"Redis", "PostgreSQL", or None, for an exception (or one it was raised from)."""
    seen = 0
    while exc is not None and seen < 5:
        for klass in type(exc).__mro__:
            name = f"{klass.__module__}.{klass.__qualname__}"
            if name in ("redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError"):
                return "Redis"
            if name in ("psycopg.OperationalError", "psycopg_pool.PoolTimeout",
                        "psycopg.errors.OperationalError"):
                return "PostgreSQL"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _exception_of(record: logging.LogRecord) -> BaseException | None:
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    args = record.args if isinstance(record.args, tuple) else ()
    return next((a for a in args if isinstance(a, BaseException)), None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:FIRST_LINE_CHARS]}" if text else type(exc).__name__


def _one_line(record: logging.LogRecord, text: str) -> None:
    from app.logs import mask  # an error's text may hold a URL with its password

    record.msg, record.args = mask(text), None
    record.exc_info = record.exc_text = None
    record.stack_info = None


class Outage:
    def __init__(self, started: float):
        self.started = started
        self.last_line = started
        self.hidden = 0


class OutageFilter(logging.Filter):
    def __init__(self, probes: dict[str, Callable[[], None]],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.probes = probes
        self.clock = clock
        self.lock = threading.Lock()
        self.outages: dict[str, Outage] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_outage_decision", None)
        if decided is not None:  # the same record on a second handler
            return decided
        record._outage_decision = keep = self._decide(record)
        return keep

    def _decide(self, record: logging.LogRecord) -> bool:
        exc = _exception_of(record)
        if exc is None:
            return True
        service = service_of(exc)
        if service is None:
            if _qualname(exc) in KNOWN and record.exc_info:
                try:
                    message = record.getMessage()
                except Exception:  # logging reports its own formatting error
                    return True
                _one_line(record, f"{message} {_first_line(exc)}")
            return True
        now = self.clock()
        with self.lock:
            outage = self.outages.get(service)
            if outage is None:
                self.outages[service] = Outage(now)
                _one_line(record, f"{service} unreachable: {_first_line(exc)} "
                                  f"(one line a minute while it lasts)")
                record.levelno, record.levelname = logging.ERROR, "ERROR"
                self._start_probe(service)
                return True
            outage.hidden += 1
            if now - outage.last_line < REPEAT_SECONDS:
                return False
            outage.last_line = now
            _one_line(record, f"{service} still unreachable for {now - outage.started:.0f} s "
                              f"({outage.hidden} errors not shown)")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            outage.hidden = 0
            return True

    def _start_probe(self, service: str) -> None:
        probe = self.probes.get(service)
        if probe is None:
            return
        threading.Thread(target=self._watch, args=(service, probe), daemon=True,
                         name=f"outage-{service}").start()

    def _watch(self, service: str, probe: Callable[[], None]) -> None:
        while True:
            time.sleep(PROBE_SECONDS)
            try:
                probe()
            except Exception:
                continue
            with self.lock:
                outage = self.outages.pop(service, None)
            if outage is not None:
                log.warning("%s reachable again after %.0f s (%d errors not shown)", service,
                            self.clock() - outage.started, outage.hidden)
            return


def default_probes() -> dict[str, Callable[[], None]]:
    """A PING of the app's Redis and a connection to its database, each bounded to 3 s."""
    from app.settings import get_settings

    settings = get_settings()

    def redis_probe() -> None:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=3,
                                      socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()

    def postgres_probe() -> None:
        import psycopg

        with psycopg.connect(settings.database_url, connect_timeout=3, prepare_threshold=None):
            pass

    return {"Redis": redis_probe, "PostgreSQL": postgres_probe}


_installed: OutageFilter | None = None


def install(loggers: tuple[str, ...] = ("", "app", "huey"), probes=None) -> OutageFilter:
    """The filter on every handler of these loggers (once per process)."""
    global _installed
    if _installed is None:
        _installed = OutageFilter(default_probes() if probes is None else probes)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if _installed not in handler.filters:
                handler.addFilter(_installed)
    return _installed
