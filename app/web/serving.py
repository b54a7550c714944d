"""Serving a WSGI app with waitress: no server banner, bounded requests, an access log, a clean stop.

Bounds (docs/health.md, "Request bounds"; Caddy in front applies the same body limit): a body of
MAX_BODY_BYTES or more is answered 413 from its Content-Length before any of it is read (a chunked one
as soon as it passes the limit), and no request is ever spooled to disk: waitress buffers a body in
memory up to `inbuf_overflow` and in a temporary file beyond it, so that threshold is set above the
body limit plus one read (a chunked body is checked after each read of up to 8 KB). Headers are capped too, an idle connection is closed after CHANNEL_TIMEOUT_S, and at most
CONNECTION_LIMIT connections are open at once (Caddy's proxy opens fewer).

waitress handles no signals itself. SIGINT (what PM2 sends) and SIGTERM raise KeyboardInterrupt in
its main loop, which is waitress's own stop path: the loop ends and it waits up to 5 s (fixed
in waitress) for the worker threads, so requests being served finish; each thread writes its
response to the socket itself (waitress 3 sends from the first byte), so the answers go out.
Requests accepted but still waiting for a free thread are dropped. PM2's kill_timeout for web
(15 s) exceeds the wait; the slowest endpoint, health, is bounded at ~2 s.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote

from waitress.server import create_server

log = logging.getLogger(__name__)

THREADS = 4
MAX_BODY_BYTES = 10_000  # the service's routes take no body at all; Caddy refuses the same (Caddyfile.j2)
MAX_HEADER_BYTES = 16_384
INBUF_OVERFLOW = 128 * 1024  # never reached: refused at MAX_BODY_BYTES + one read (recv_bytes 8192)
CHANNEL_TIMEOUT_S = 60  # above Caddy's upstream keep-alive (30 s), so Caddy closes idle connections first
CONNECTION_LIMIT = 64  # Caddy's proxy keeps at most 32 (max_conns_per_host)


class AccessLog:
    """WSGI middleware: one line per request on stdout (PM2's out log), errors stay on stderr.

    The path is logged without its query string (a token could ride in it) and percent-encoded,
    so a crafted path cannot forge log lines.
    """

    def __init__(self, app, stream=None):
        self.app = app
        self.stream = stream

    def __call__(self, environ, start_response):
        started = time.monotonic()
        status = "500"

        def capture(line, headers, exc_info=None):
            nonlocal status
            status = line.split(" ", 1)[0]
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, capture)
        finally:
            path = quote(environ.get("PATH_INFO", ""), safe="/:@-._~!$&'()*+,;=")
            stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            print(f"{stamp} {environ.get('REQUEST_METHOD', '-')} {path} {status} "
                  f"{(time.monotonic() - started) * 1000:.1f}ms",
                  file=self.stream or sys.stdout, flush=True)


def make_server(app, host: str, port: int):
    """A waitress server (not yet running) that sends no Server header or version anywhere and
    refuses oversized requests without reading or spooling them."""
    return create_server(app, host=host, port=port, threads=THREADS, ident="", expose_tracebacks=False,
                         max_request_body_size=MAX_BODY_BYTES, inbuf_overflow=INBUF_OVERFLOW,
                         max_request_header_size=MAX_HEADER_BYTES, channel_timeout=CHANNEL_TIMEOUT_S,
                         connection_limit=CONNECTION_LIMIT)


def run(server) -> None:
    """Serve until SIGINT or SIGTERM; return normally (exit 0) once requests in flight are done."""
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()  # catches the KeyboardInterrupt, then waits for the running requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("stopped after the requests in flight")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # nothing else here: a handler that logs could re-enter a write
