"""Request bounds of the real waitress process: an oversized body is refused at once, nothing is spooled.

waitress buffers a request body in memory up to `inbuf_overflow`, then in a temporary file (an unlinked
one: it never shows in a directory listing, only among the process's open files). So "nothing spooled"
is checked where a spool would be: the process's open files under its TMPDIR, and that directory's
disk usage. The baseline test shows the check sees a spool when there is one (waitress's defaults).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest
from waitress.server import create_server

from app.web import serving
from tests.test_web import WebProcess

UPLOAD = 50 * 2**20  # 50 MB
CHUNK = b"x" * 65536


def open_files_under(pid: int | str, directory) -> list[str]:
    found = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def disk_usage(directory) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_blocks for d, _, fs in os.walk(directory) for f in fs)


class Uploader(threading.Thread):
    """Sends `total` body bytes after `head`, until done or the server closes on it."""

    def __init__(self, sock: socket.socket, head: bytes, total: int, chunked: bool = False):
        super().__init__(daemon=True)
        self.sock, self.head, self.total, self.chunked = sock, head, total, chunked
        self.sent = 0
        self.stopped_by: Exception | None = None

    def run(self) -> None:
        try:
            self.sock.sendall(self.head)
            while self.sent < self.total:
                piece = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if self.chunked else CHUNK
                self.sock.sendall(piece)
                self.sent += len(CHUNK)
        except OSError as exc:
            self.stopped_by = exc


def read_status_and_headers(sock: socket.socket, timeout: float) -> tuple[int, dict, float]:
    """(status, headers, seconds until the head of the answer arrived)."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    took = time.monotonic() - t0
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}, took


@pytest.fixture
def spool(tmp_path):
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_upload_gets_413_at_once_and_nothing_is_spooled(services, tmp_path, spool, chunked):
    services.heartbeat.beat()  # a worker's beat: health answers 200
    web = WebProcess(tmp_path, TMPDIR=str(spool))
    try:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % UPLOAD
        head = b"POST /api/cron HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % framing
        with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
            uploader = Uploader(sock, head, UPLOAD, chunked=chunked)
            uploader.start()
            status, headers, took = read_status_and_headers(sock, timeout=5)
            seen_spooled = []
            deadline = time.monotonic() + 10
            while uploader.is_alive() and time.monotonic() < deadline:  # look while the client still sends
                seen_spooled += open_files_under(web.proc.pid, spool)
                uploader.join(0.01)
            seen_spooled += open_files_under(web.proc.pid, spool)
        assert status == 413, headers
        assert took < 1.0, f"413 after {took:.2f}s"
        assert "server" not in headers and "via" not in headers
        # the server closed the connection instead of reading on: the upload stopped far short of 50 MB
        assert not uploader.is_alive() and uploader.stopped_by is not None
        assert uploader.sent < UPLOAD // 4, uploader.sent
        assert seen_spooled == []
        assert disk_usage(spool) == 0
        # and it serves the next request as before
        answer, _ = web.request("GET", "/api/monitoring/health")
        assert answer.status == 200
    finally:
        web.kill()


def test_a_body_just_under_the_limit_is_read_and_just_at_it_refused(services, tmp_path):
    web = WebProcess(tmp_path)
    try:
        codes = []
        for size in (serving.MAX_BODY_BYTES - 1, serving.MAX_BODY_BYTES):
            with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
                sock.sendall(b"POST /api/cron HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                             % (size, b"x" * size))
                codes.append(read_status_and_headers(sock, timeout=5)[0])
        assert codes == [401, 413]  # under the limit the app answers (no token); at it, waitress refuses
    finally:
        web.kill()


def test_baseline_waitress_defaults_spool_a_large_body_where_the_check_looks(spool, monkeypatch):
    """The check above is not blind: with waitress's defaults, a 2 MB body lands in a temporary file."""
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    entered, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = create_server(app, host="127.0.0.1", port=0, threads=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        size = 2 * 2**20
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(CHUNK)):
                sock.sendall(CHUNK)
            assert entered.wait(10)
            spooled = open_files_under("self", spool)
            release.set()
            assert read_status_and_headers(sock, timeout=5)[0] == 200
        assert spooled, "waitress's defaults should have spooled the 2 MB body to a temporary file"
    finally:
        release.set()
        server.close()
