"""The real consumer, as `python -m app worker` runs it, plus what benchmarks need to watch it.

Same module, same Huey instance, same flags (app.queue.worker.consumer_args); two additions, both
bench-only: a no-op task (for the queue-overhead figure) and a completion counter that writes the
time to Redis each time BENCH_NOOP_BATCH no-ops have finished (one command per batch, not per
task). BENCH_WORKERS overrides the worker count for the drain-vs-workers curve.

Run: python -m bench._consumer
"""

from __future__ import annotations

import os

from app import tasks
from app.queue import worker
from app.settings import get_settings
from bench import _noop


def main() -> None:
    import sys

    from huey.bin.huey_consumer import consumer_main

    # the project's tasks and the bench no-op are registered on the one Huey instance
    assert tasks.check_section and _noop.noop
    if os.environ.get("BENCH_PARTS"):  # bench/drain_parts.py's tasks (issue 30)
        from bench import _parts  # noqa: F401
    settings = get_settings()
    # as `python -m app worker` decides it: SEATWATCH_SCHEDULER=off runs no periodic scheduler
    args = worker.consumer_args(settings, scheduler=settings.scheduler)
    workers = os.environ.get("BENCH_WORKERS")
    if workers:
        args[args.index("-w") + 1] = workers
    sys.argv = ["huey_consumer", *args]
    consumer_main()


if __name__ == "__main__":
    main()
