"""Bench-only experiment (issue 30): web and worker in ONE process, to weigh against the two.

waitress (app.web.routes' app, app.web.serving's bounds) serves on a thread of its own while the
Huey consumer runs in the main thread with the project's flags (bench/_consumer.py: the same
module, tasks, flags and no-op task). The main thread is the consumer's because huey installs its
signal handlers there (SIGINT is the graceful stop); waitress's loop needs no signals: it stops
with the process. One interpreter, one copy of psycopg/redis-py/huey's modules, one Redis pool
per kind instead of two processes' worth. Not the deploy's layout: roles/ and templates/ start
web and worker apart; this module only measures the alternative (bench/health_under_drain.py).

Run: python -m bench._oneprocess PORT
"""

from __future__ import annotations

import sys
import threading


def main() -> None:
    from app.services import get_services
    from app.web import routes, serving
    from bench import _consumer

    port = int(sys.argv[1])
    server = serving.make_server(serving.AccessLog(routes.make_app(get_services())), "127.0.0.1", port)
    threading.Thread(target=server.run, name="waitress", daemon=True).start()
    _consumer.main()


if __name__ == "__main__":
    main()
