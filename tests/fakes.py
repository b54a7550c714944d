"""Stand-ins for the two outside services, as small real HTTP servers.

They speak the contracts of DESIGN.md section 4 over real sockets, so the code under test uses its
real clients (`requests` for the scraper, the `resend` SDK for email):

- FakeScraper: `POST /scrape` with `Authorization: Bearer <token>` and
  `{"sectionNumber": "12431", "term": "2261"}`; 200 `{"success": true, "data": {...}}`,
  400 bad input, 401 bad token, 500 `{"success": false, "error": ...}` for an unknown section.
- FakeResend: `POST /emails` and `POST /emails/batch` with `Authorization: Bearer <key>`. It keeps
  Resend's idempotency behaviour: the same `Idempotency-Key` with the same payload replays the first
  answer without sending again; the same key with another payload answers 409.

Both can be told to fail: `fail_next(n, status, ...)` answers the next n requests with an error.
Bind them to another address (`host=`) to serve a test host in a network namespace.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCRAPER_TOKEN = "scraper-test-token"
RESEND_KEY = "re_test_key"


class _Server:
    """A threaded HTTP server on its own thread; subclasses implement `handle(req)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def parse_request(self) -> bool:
                # the request line has just been read: a set delay counts from here, so the
                # answer is due `delay` after the request arrived, whatever this process spent
                # parsing it (a real service's latency is the whole call, not a sleep on top)
                outer._client.arrived = time.monotonic()
                return super().parse_request()

            def _dispatch(self) -> None:
                outer._client.address = self.client_address[0]  # who asked (handle() runs on this thread)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = outer.handle(self.command, self.path, self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _dispatch

        self._lock = threading.Lock()
        self._client = threading.local()
        self._failures: list[tuple[int, dict, Any]] = []
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "_Server":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def fail_next(self, n: int, status: int = 500, body: Any = None, headers: dict | None = None) -> None:
        """Answer the next n (authorized) requests with this error instead of the real answer."""
        with self._lock:
            self._failures.extend([(status, headers or {}, body)] * n)

    def _take_failure(self):
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def handle(self, method: str, path: str, headers, body: bytes):  # pragma: no cover
        raise NotImplementedError


class FakeScraper(_Server):
    """The scraper service: section data by (term, class_nbr)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = SCRAPER_TOKEN):
        super().__init__(host, port)
        self.token = token
        self.sections: dict[tuple[str, str], dict] = {}
        self.raw: dict[tuple[str, str], tuple[int, bytes, str]] = {}
        self.delay = 0.0
        self.calls: list[tuple[str, str]] = []
        self.clients: list[str] = []  # the address of each scrape call, in order (scale-out test)

    def set_section(
        self,
        term: str,
        class_nbr: str,
        *,
        seats_available: int = 0,
        seats_capacity: int = 100,
        non_reserved_seats: int | None = None,
        instructor: str = "Staff",
        subject: str = "CSE",
        catalog_nbr: str = "110",
        title: str = "Principles of Programming",
        location: str = "BYENG 210",
        meeting_times: str = "MW 10:30AM - 11:45AM",
    ) -> None:
        self.raw.pop((term, class_nbr), None)
        self.sections[(term, class_nbr)] = {
            "subject": subject,
            "catalog_nbr": catalog_nbr,
            "title": title,
            "instructor": instructor,
            "seats_available": seats_available,
            "seats_capacity": seats_capacity,
            "non_reserved_seats": non_reserved_seats,
            "location": location,
            "meeting_times": meeting_times,
        }

    def set_raw(self, term: str, class_nbr: str, status: int, body: bytes,
                content_type: str = "application/json") -> None:
        """Answer this section with exactly these bytes (for malformed answers)."""
        self.raw[(term, class_nbr)] = (status, body, content_type)

    def handle(self, method, path, headers, body):
        if method != "POST" or path.rstrip("/") != "/scrape":
            return 404, {}, {"success": False, "error": "Not found"}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {}, {"success": False, "error": "Unauthorized"}
        try:
            req = json.loads(body)
            nbr, term = str(req["sectionNumber"]), str(req["term"])
        except (ValueError, KeyError, TypeError):
            return 400, {}, {"success": False, "error": "Invalid request body"}
        if not (nbr.isdigit() and len(nbr) == 5 and term.isdigit() and len(term) == 4):
            return 400, {}, {"success": False, "error": "Invalid section number or term"}
        with self._lock:
            self.calls.append((term, nbr))
            self.clients.append(getattr(self._client, "address", ""))
        if self.delay:
            arrived = getattr(self._client, "arrived", None) or time.monotonic()
            time.sleep(max(0.0, arrived + self.delay - time.monotonic()))
        failure = self._take_failure()
        if failure:
            status, hdrs, fbody = failure
            return status, hdrs, fbody if fbody is not None else {"success": False, "error": "Scrape failed"}
        if (term, nbr) in self.raw:
            status, raw, ctype = self.raw[(term, nbr)]
            return status, {"Content-Type": ctype}, raw
        data = self.sections.get((term, nbr))
        if data is None:
            return 500, {}, {"success": False, "error": f"Section {nbr} not found"}
        return 200, {}, {"success": True, "data": data}


_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[A-Za-z]{2,}$")


def valid_address(value) -> bool:
    """Resend accepts `a@b.tld` or `Name <a@b.tld>`."""
    if not isinstance(value, str):
        return False
    m = re.fullmatch(r"[^<>]*<([^<>]+)>", value.strip())
    return bool(_ADDRESS.match(m.group(1) if m else value.strip()))


INVALID_FROM = ("Invalid `from` field. The email address needs to follow the `email@example.com` "
                "or `Name <email@example.com>` format.")


class FakeResend(_Server):
    """Resend's email API as it really answers (DESIGN.md section 4), not as we would like it to.

    - Auth: no key 401 `missing_api_key`; a wrong key (one being rotated) 403 `invalid_api_key`;
      a sender whose domain is in `unverified_domains` 403 `validation_error`.
    - Idempotency-Key, kept for the life of the server: the same key and body replays the first
      successful answer without sending; the same key while the first request is still being
      processed answers 409 `concurrent_idempotent_requests`; the same key with another body
      answers 409 `invalid_idempotent_request`. Failed requests do not store their key.
    - Batches: at most 100; validation is strict by default (one invalid email fails the whole
      batch with 422), or permissive with `x-batch-validation: permissive` (the valid emails go,
      `errors` lists the others by index).
    - A sender that is not `email@domain.tld` or `Name <email@domain.tld>`: strict validation fails
      the batch with 422 `invalid_from_address`; permissive validation refuses each email with an
      error about the `from` field, or, with `sender_errors = "batch"`, fails the whole batch with
      422 `invalid_from_address` as well (both answers are seen from Resend).
    - Trouble on demand: `fail_next(n, status, body, headers)` (429 with `retry-after`, 5xx, any),
      `lose_next_answers(n)` (sent, but the answer is a 500), `hang_next(n, seconds, outcome)`
      (the request is held, as by a slow Resend, past the client's timeout; then it is sent, or
      fails with 500 when outcome="fail").
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = RESEND_KEY):
        super().__init__(host, port)
        self.api_key = api_key
        self.emails: list[dict] = []  # every email actually accepted for delivery
        self.unverified_domains: set[str] = set()
        self._idempotency: dict[str, tuple[str, int, Any]] = {}
        self._in_flight: set[str] = set()
        self._hangs: list[tuple[float, str]] = []
        self._lose_next = 0
        self.sender_errors = "per_email"  # or "batch": an invalid `from` fails the whole batch

    def reset(self) -> None:
        with self._lock:
            self.emails.clear()
            self.requests.clear()
            self._failures.clear()
            self._idempotency.clear()
            self._in_flight.clear()
            self._hangs.clear()
            self._lose_next = 0
            self.unverified_domains.clear()
            self.api_key = RESEND_KEY
            self.sender_errors = "per_email"

    def lose_next_answers(self, n: int) -> None:
        """Accept the next n sends but answer 500, as if the answer were lost on the way back."""
        with self._lock:
            self._lose_next += n

    def hang_next(self, n: int, seconds: float, outcome: str = "send") -> None:
        """Hold the next n requests for `seconds`; then send them ("send") or fail them ("fail")."""
        with self._lock:
            self._hangs.extend([(seconds, outcome)] * n)

    def to(self, address: str) -> list[dict]:
        return [e for e in self.emails if address in e.get("to", [])]

    @staticmethod
    def _error(status: int, name: str, message: str, headers: dict | None = None):
        return status, headers or {}, {"statusCode": status, "name": name, "message": message}

    def handle(self, method, path, headers, body):
        path = path.split("?")[0].rstrip("/")
        if method != "POST" or path not in ("/emails", "/emails/batch"):
            return self._error(404, "not_found", "The requested endpoint does not exist.")
        with self._lock:
            self.requests.append({"path": path, "key": headers.get("Idempotency-Key"), "count": None,
                                  "validation": headers.get("x-batch-validation") or "strict"})
            record = self.requests[-1]
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._error(401, "missing_api_key", "Missing API key in the authorization header")
        if auth != f"Bearer {self.api_key}":
            return self._error(403, "invalid_api_key", "API key is invalid")
        try:
            payload = json.loads(body)
        except ValueError:
            return self._error(422, "validation_error", "Invalid JSON")
        batch = path == "/emails/batch"
        if batch and not isinstance(payload, list):
            return self._error(422, "validation_error", "Batch must be a list")
        emails = payload if batch else [payload]

        key = headers.get("Idempotency-Key")
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            record["count"] = len(emails)
            if key and key in self._in_flight:
                return self._error(409, "concurrent_idempotent_requests",
                                   "Same idempotency key used while original request is still in progress")
            if key and key in self._idempotency:
                seen_digest, status, answer = self._idempotency[key]
                if seen_digest != digest:
                    return self._error(409, "invalid_idempotent_request",
                                       "Same idempotency key used with a different request payload")
                return status, {}, answer
            if key:
                self._in_flight.add(key)
            hang = self._hangs.pop(0) if self._hangs else None
        try:
            if hang:
                time.sleep(hang[0])
                if hang[1] == "fail":
                    return self._error(500, "application_error", "Internal server error")
            return self._process(path, batch, emails, headers, key, digest)
        finally:
            with self._lock:
                self._in_flight.discard(key)

    def _invalid(self, email) -> str | None:
        if not isinstance(email, dict) or not all(email.get(f) for f in ("from", "to", "subject")):
            return "Missing `from`, `to` or `subject` field."
        if not valid_address(email["from"]):
            return INVALID_FROM
        to = email["to"] if isinstance(email["to"], list) else [email["to"]]
        bad = [a for a in to if not valid_address(a)]
        if bad:
            return f"Invalid `to` field. The email address needs to follow the `email@example.com` format: {bad[0]}"
        return None

    def _process(self, path, batch, emails, headers, key, digest):
        if len(emails) > 100:
            return self._error(422, "validation_error", "Too many emails in batch (max 100)")
        permissive = batch and (headers.get("x-batch-validation") or "").lower() == "permissive"
        bad_sender = any(isinstance(e, dict) and e.get("from") and not valid_address(e["from"])
                         for e in emails)
        if bad_sender and (not permissive or self.sender_errors == "batch"):
            return self._error(422, "invalid_from_address", INVALID_FROM)
        errors = []
        for index, email in enumerate(emails):
            reason = self._invalid(email)
            if reason and not permissive:
                return self._error(422, "validation_error", reason if not batch else f"emails[{index}]: {reason}")
            if reason:
                errors.append({"index": index, "message": reason})
        failed_indexes = {e["index"] for e in errors}
        for index, email in enumerate(emails):
            if index in failed_indexes:
                continue
            domain = str(email["from"]).rsplit("@", 1)[-1].rstrip(">").lower()
            if domain in self.unverified_domains:
                return self._error(403, "validation_error",
                                   f"The {domain} domain is not verified. Please, add and verify your domain.")
        failure = self._take_failure()
        if failure:
            status, hdrs, fbody = failure
            return status, hdrs, fbody if fbody is not None else {
                "statusCode": status, "name": "application_error", "message": "Internal server error"}
        accepted = [e for i, e in enumerate(emails) if i not in failed_indexes]
        ids = [{"id": str(uuid.uuid4())} for _ in accepted]
        if batch:
            answer = {"data": ids, "errors": errors} if permissive else {"data": ids}
        else:
            answer = ids[0]
        with self._lock:
            self.emails.extend(accepted)
            if key:
                self._idempotency[key] = (digest, 200, answer)
            if self._lose_next:
                self._lose_next -= 1
                return self._error(500, "application_error", "Answer lost")
        return 200, {}, answer
