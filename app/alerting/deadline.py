"""An overall deadline for one outbound call (a ping, an alert webhook, an Apprise send).

A socket timeout bounds each wait for a byte, not the call: a peer that trickles one byte every few
seconds holds a plain `requests.post(timeout=5)` for as long as it likes, and with it the alert
evaluation (and its Redis lock) or the slot's ping. `within` runs the call on a daemon thread and
gives up waiting at the deadline; the call gets an Event set at that moment, which its reading
loop checks, so the abandoned thread stops at its next chunk too.
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
