"""Outbound HTTP calls with an overall deadline, whatever the peer does.

urllib3's timeouts bound each socket operation, not the call: a peer that trickles one byte every
half second keeps a call with a 2-second read timeout going for as long as it trickles (issue 26
measured 30 s). Four such calls would hold every worker past the running marker's TTL, PM2's stop
timeout and the breaker's trial permit. Here each call has a deadline:

- one watchdog thread per process keeps the deadlines of the calls in flight and, when one
  passes, shuts that call's socket down (a `recv` blocked in another thread returns at once);
- the answer's body is read up to a cap, so a huge body costs the cap, not the memory (and it is
  never decompressed, so a small compressed body cannot grow past it either).

A call whose deadline passed raises `DeadlineExceeded`, one whose body is over the cap raises
`BodyTooLarge`; urllib3's own errors (refused, reset, its per-read timeout) pass through.
Connections are kept alive and reused as before; one that was shut down is never put back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

log = logging.getLogger(__name__)


class DeadlineExceeded(Exception):
    """The call did not end within its deadline (its socket was shut down)."""


class BodyTooLarge(Exception):
    """The answer's body is larger than the call accepts."""


class _Watchdog:
    """Ends each armed call at its deadline, on one daemon thread for the process.

    The calls in flight are a set (arming and disarming cost a lock and a set operation); the
    thread sleeps until the nearest deadline among them, or for good while there are none, and is
    woken only when a call with an earlier deadline than the one it waits for arrives. Under steady
    traffic it wakes about once per deadline period, not once per call."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: set["_Call"] = set()
        self._wake_at = float("inf")  # when the thread wakes next, as far as it knows
        self._thread: threading.Thread | None = None

    def arm(self, call: "_Call") -> None:
        with self._cond:
            self._calls.add(call)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            if call.deadline < self._wake_at:
                self._cond.notify()

    def disarm(self, call: "_Call") -> None:
        with self._cond:
            self._calls.discard(call)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [c for c in self._calls if c.deadline <= now]
                if due:
                    self._calls.difference_update(due)
                    self._cond.release()
                    try:
                        for call in due:
                            self._expire(call)
                    finally:
                        self._cond.acquire()
                    continue
                self._wake_at = min((c.deadline for c in self._calls), default=float("inf"))
                self._cond.wait(None if self._wake_at == float("inf") else self._wake_at - now)
                self._wake_at = float("inf")

    @staticmethod
    def _expire(call: "_Call") -> None:
        try:
            call.expire()
        except Exception:  # never let one call's socket stop the watchdog
            log.exception("http deadline: could not end a call")


_WATCHDOG = _Watchdog()
_local = threading.local()


class _Call:
    """One call in flight: its deadline, the connection it uses, whether it expired or ended."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.conn: HTTPConnection | None = None
        self.expired = False
        self.done = False

    def attach(self, conn: HTTPConnection) -> None:
        with self.lock:
            self.conn = conn
            if self.expired:
                raise DeadlineExceeded("deadline passed before the request was sent")

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def _current() -> _Call | None:
    return getattr(_local, "call", None)


class _Tracked:
    """Connection mixin: tells the thread's call which socket to shut down at its deadline."""

    def connect(self) -> None:
        call = _current()
        if call is not None:
            call.attach(self)
        super().connect()  # bounded by the connect timeout
        if call is not None and call.expired:  # expired while connecting: no socket was there to shut
            self.close()
            raise DeadlineExceeded("deadline passed while connecting")

    def request(self, *args, **kwargs):
        call = _current()
        if call is not None:
            call.attach(self)
        return super().request(*args, **kwargs)


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict
    data: bytes


class BoundedClient:
    """Keep-alive HTTP(S) calls, each ended by `deadline` seconds after it started, answers of at
    most `max_body` bytes. No retries, no redirects: the callers own those decisions."""

    def __init__(self, deadline: float, *, max_body: int, connect_timeout: float = 5.0,
                 maxsize: int = 8, ca_certs: str | None = None) -> None:
        self.deadline = deadline
        self.max_body = max_body
        connect = min(connect_timeout, deadline)
        self.manager = urllib3.PoolManager(
            maxsize=maxsize, block=False, retries=False,
            # the per-read timeout only backs the watchdog up: the deadline is what ends a call
            timeout=urllib3.Timeout(connect=connect, read=deadline + 1.0),
            **({"ca_certs": ca_certs} if ca_certs else {}))
        self.manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: dict | None = None) -> Answer:
        call = _Call(self.deadline)
        _local.call = call
        _WATCHDOG.arm(call)
        resp, complete = None, False
        try:
            # never decompressed (nothing here asks for an encoding): a compressed answer cannot
            # grow past the cap in memory; it fails as the JSON it is not
            resp = self.manager.urlopen(method, url, body=body, headers=headers, retries=False,
                                        redirect=False, preload_content=False, decode_content=False)
            data = self._read(resp)
            complete = True
        except (urllib3.exceptions.HTTPError, OSError, DeadlineExceeded):
            if call.expired:
                raise DeadlineExceeded(f"no full answer within {self.deadline:g}s") from None
            raise
        finally:
            _local.call = None
            with call.lock:
                call.done = True  # from here the watchdog leaves the socket alone
            _WATCHDOG.disarm(call)
            if resp is not None:
                if call.expired or not complete:
                    resp.close()  # shut down, or a body left unread: its connection is not reused
                resp.release_conn()
        return Answer(resp.status, dict(resp.headers), data)

    def _read(self, resp) -> bytes:
        length = resp.headers.get("content-length")
        if length and length.isdigit():
            if int(length) > self.max_body:
                raise BodyTooLarge(f"answer of {int(length)} bytes, more than {self.max_body}")
            return resp.read()  # bounded by its length (and by the deadline): one read
        chunks, size = [], 0
        while True:
            chunk = resp.read(min(65536, self.max_body + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge(f"answer larger than {self.max_body} bytes")


_clients: dict[tuple[float, int], BoundedClient] = {}
_clients_lock = threading.Lock()


def shared_client(deadline: float, max_body: int) -> BoundedClient:
    """One client (and connection pool) per deadline and cap in this process, for occasional calls
    (the alerts' webhooks and emails, the dead man's switch)."""
    with _clients_lock:
        client = _clients.get((deadline, max_body))
        if client is None:
            client = _clients[(deadline, max_body)] = BoundedClient(deadline, max_body=max_body, maxsize=2)
        return client


def failure_name(exc: BaseException) -> str:
    """A call's failure in one stable word for logs and alert channels (never the peer's address or
    a library's message): ConnectionError, DeadlineExceeded, BodyTooLarge, or the exception's type."""
    if isinstance(exc, (DeadlineExceeded, BodyTooLarge)):
        return type(exc).__name__
    if isinstance(exc, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError,
                        urllib3.exceptions.MaxRetryError, ConnectionError)):
        return "ConnectionError"
    return type(exc).__name__
