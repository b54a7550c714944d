"""The scraper and Resend stand-ins (tests/fakes.py) in a process of their own, for benchmarks.

In their own process so their CPU is not billed to the code being measured, and steerable over
HTTP by the benchmark:

- scraper: any well-formed section answers (no need to register 10,000 sections); its seats and
  instructor come from `/_section` overrides; `/_delay` sets the latency of every call.
  At most SCRAPER_CONCURRENCY calls are served at once (the real scraper allows 10); more
  answer 429, as it does. `/_stats` returns the calls, the peak concurrency and when each
  section last answered.
- Resend: tests/fakes.py's FakeResend as is (idempotency, batches); `/_accepted` returns each
  accepted recipient with the time it was accepted.

Run: python -m bench._standins  (prints one JSON line: the two URLs).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from tests.fakes import FakeResend, FakeScraper

SCRAPER_CONCURRENCY = 10


def _no_nagle(server) -> None:
    """http.server writes the headers and the body in two sends; with Nagle's algorithm on, the
    body waits for the client's delayed ACK (~40 ms on Linux) on a kept-alive connection. The
    real services answer in one go, so the stand-ins must not add that stall to every call."""
    server.server.RequestHandlerClass.disable_nagle_algorithm = True


class BenchScraper(FakeScraper):
    def __init__(self):
        super().__init__()
        _no_nagle(self)
        self.overrides: dict[tuple[str, str], dict] = {}
        self.in_flight = self.peak = self.served = self.refused = 0
        self.answered_at: dict[str, float] = {}

    def handle(self, method, path, headers, body):
        if path.startswith("/_"):
            return self.control(path, body)
        try:
            req = json.loads(body)
            key = (str(req["term"]), str(req["sectionNumber"]))
        except (ValueError, KeyError, TypeError):
            return super().handle(method, path, headers, body)
        with self._lock:
            if self.in_flight >= SCRAPER_CONCURRENCY:
                self.refused += 1
                return 429, {"retry-after": "1"}, {"success": False, "error": "Too many requests"}
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            over = self.overrides.get(key, {})
        try:
            self.sections[key] = {"subject": "CSE", "catalog_nbr": "110", "title": "Principles of Programming",
                                  "instructor": over.get("instructor", "Staff"),
                                  "seats_available": over.get("seats", 0), "seats_capacity": 100,
                                  "non_reserved_seats": None, "location": "BYENG 210",
                                  "meeting_times": "MW 10:30AM - 11:45AM"}
            answer = super().handle(method, path, headers, body)
            with self._lock:
                self.served += 1
                self.answered_at[f"{key[0]}/{key[1]}"] = time.time()
            return answer
        finally:
            with self._lock:
                self.in_flight -= 1

    def control(self, path, body):
        req = json.loads(body) if body else {}
        with self._lock:
            if path == "/_delay":
                self.delay = float(req["seconds"])
            elif path == "/_section":
                for term, nbr in req["sections"]:
                    self.overrides[(term, nbr)] = {"seats": req.get("seats", 0),
                                                   "instructor": req.get("instructor", "Staff")}
            elif path == "/_reset":
                self.overrides.clear()
                self.sections.clear()
                self.answered_at.clear()
                self.calls.clear()
                self.peak = self.served = self.refused = 0
            return 200, {}, {"served": self.served, "peak": self.peak, "refused": self.refused,
                             "answered_at": self.answered_at if path == "/_stats" else {}}


class _Stamped(list):
    """FakeResend's list of accepted emails, keeping only (recipient, time accepted): 10,000
    emails of ~10 KB each would otherwise pile up in this process."""

    def __init__(self, accepted: list):
        super().__init__()
        self.accepted = accepted

    def extend(self, emails) -> None:  # called under FakeResend's lock
        now = time.time()
        self.accepted.extend((e["to"][0], now) for e in emails)


class BenchResend(FakeResend):
    def __init__(self):
        super().__init__()
        _no_nagle(self)
        self.accepted: list[tuple[str, float]] = []
        self.emails = _Stamped(self.accepted)

    def handle(self, method, path, headers, body):
        if path == "/_accepted":
            with self._lock:
                return 200, {}, {"accepted": self.accepted}
        if path == "/_reset":
            self.reset()
            with self._lock:
                self.accepted.clear()
            return 200, {}, {}
        return super().handle(method, path, headers, body)


def main() -> None:
    scraper, resend = BenchScraper().start(), BenchResend().start()
    print(json.dumps({"scraper": scraper.url, "resend": resend.url}), flush=True)
    try:
        threading.Event().wait() if sys.stdin.isatty() else sys.stdin.read()  # until the parent goes
    finally:
        scraper.stop()
        resend.stop()


if __name__ == "__main__":
    main()
