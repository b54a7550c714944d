"""An overall deadline for a call whose sockets are not ours: an Apprise send.

Our own HTTP (webhooks, the alert email, the ping) is bounded by app.httpdeadline, which shuts a late
call's socket. Apprise opens its own connections through requests, out of that reach, and a
socket timeout bounds each wait for a byte, not the call: a peer that trickles one byte every few
seconds would hold the alert evaluation (and its Redis lock) for as long as it likes. `within`
runs the call on a daemon thread and gives up waiting at the deadline; the call gets an Event set
at that moment, which it may check to stop early.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call did not finish within its overall deadline."""


def within(seconds: float, fn: Callable[..., T], *args) -> T:
    """fn(*args, stop_event)'s result, or DeadlineExceeded after `seconds`; its exception re-raised."""
    stop = threading.Event()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, stop)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="outbound")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        stop.set()
        raise DeadlineExceeded(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
