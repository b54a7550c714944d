"""The Huey consumer with this project's flags.

- 4 thread workers (`-w 4 -k thread`): checks wait on the network, not the CPU.
- `-s 60`: the scheduler wakes once a minute (cron slots are minute-grained anyway), the largest
  interval huey allows and the cheapest in Redis commands. Its tick also drives the housekeeping
  (heartbeat, cron slots with catch-up, delivery sweep: app.queue.consumer, app.tasks).
- `-g INT`: SIGINT (what PM2 sends) is the graceful stop: running checks finish, idle workers are
  woken at once (app.queue.consumer). `-t` bounds that wait; PM2's kill_timeout and systemd's stop
  timeout are derived from shutdown_timeout().
- `-n` on extra worker hosts: exactly one host runs the periodic scheduler; every host beats.
"""

from __future__ import annotations

import sys

from app.settings import Settings

WORKERS = 4
SCHEDULER_INTERVAL = 60
# Longest email part of a check: 4 Resend attempts of at most 15 s plus backoff (app.mail.mailer).
MAIL_BUDGET_SECONDS = 70
MARGIN_SECONDS = 20


def shutdown_timeout(settings: Settings) -> int:
    """Bound of a graceful stop, in seconds: busy workers finish their check (scraper timeout
    plus email). Idle workers no longer count: the stop wakes them from their blocking read at
    once (app.queue.consumer), whatever the read timeout. 120 s with the defaults; an idle stop takes
    well under 2 s."""
    longest_check = int(settings.scraper_timeout) + MAIL_BUDGET_SECONDS
    return longest_check + MARGIN_SECONDS


def consumer_args(settings: Settings, scheduler: bool = True) -> list[str]:
    args = ["app.tasks.huey", "-w", str(WORKERS), "-k", "thread", "-s", str(SCHEDULER_INTERVAL),
            "-g", "INT", "-t", str(shutdown_timeout(settings))]
    if not scheduler:
        args.append("-n")
    return args


def run(settings: Settings, scheduler: bool = True) -> None:
    from huey.bin.huey_consumer import consumer_main

    sys.argv = ["huey_consumer", *consumer_args(settings, scheduler)]
    consumer_main()
