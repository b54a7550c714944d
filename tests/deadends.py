"""Dependencies that are down or hung, as real sockets, and what the health tests check with them.

- `closed_port()`: a port where nothing listens (connection refused at once).
- `HungServer`: accepts TCP connections and never answers a byte, like a wedged Redis or
  PostgreSQL: only the client's own timeouts get it out.
"""

from __future__ import annotations

import dataclasses
import socket
import threading


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HungServer:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # keep it open, say nothing

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()

    def __enter__(self) -> "HungServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TricklingServer(HungServer):
    """Answers HTTP, one byte a second, forever: every socket read gets a byte in time, so only
    an overall deadline ends the call."""

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        try:
            conn.recv(65536)
            for i in range(100000):
                if self._stop.is_set():
                    return
                conn.sendall(head[i:i + 1] if i < len(head) else b"x")
                self._stop.wait(1.0 if i >= 4 else 0.2)
        except OSError:
            return


class trickling_server:
    def __enter__(self) -> str:
        self.server = TricklingServer()
        return f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *exc) -> None:
        self.server.close()


def services_with(base, **changes):
    """A Services like `base` but built from settings with `changes` (e.g. a bad redis_url)."""
    from app.services import Services

    return Services(dataclasses.replace(base.settings, **changes))


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def pg_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/seatwatch_test"


def assert_no_secrets(body: str, *services) -> None:
    """No secret of the environment or of the given services' settings appears in `body`."""
    from app.settings import get_settings

    for settings in (get_settings(), *(s.settings for s in services)):
        for secret in settings.secret_values():
            assert secret not in body, "a secret leaked into a response body"
