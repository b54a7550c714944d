"""A peer that answers too slowly or too much, on a real socket (issue 26's deadline tests).

`TricklingServer(mode)` accepts connections, reads the request head and then:
- "head": sends a status line and headers one byte every `interval` seconds, forever;
- "body": sends a complete head announcing a large body, then the body one byte per `interval`;
- "huge": sends a head without a length and then an endless body as fast as the client reads;
- "silent": says nothing at all.
It counts the bytes it sent and stops when closed, when the client hangs up, or `limit` seconds
after the request (so a client without a deadline fails its test instead of hanging it).
"""

from __future__ import annotations

import socket
import threading
import time


class TricklingServer:
    def __init__(self, mode: str, interval: float = 0.25, limit: float = 12.0):
        self.mode, self.interval, self.limit = mode, interval, limit
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.sent = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.requests += 1
            self._until = time.monotonic() + self.limit
            try:
                if self.mode == "head":
                    self._drip(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: a\r\n" * 10000)
                elif self.mode == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 100000\r\n\r\n")
                    self._drip(conn, b"{" + b" " * 99999)
                elif self.mode == "huge":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\n\r\n[")
                    block = b"1," * 32768
                    while not self._stop.is_set() and time.monotonic() < self._until:
                        conn.sendall(block)
                        self.sent += len(block)
                else:
                    self._stop.wait(self.limit)
            except OSError:
                return  # the client hung up: what a deadline does

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.is_set() or time.monotonic() > self._until:
                return
            conn.sendall(data[i:i + 1])
            self.sent += 1
            time.sleep(self.interval)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def __enter__(self) -> "TricklingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
