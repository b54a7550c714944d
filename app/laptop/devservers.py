"""Dev mode's own Redis and PostgreSQL: started in ./.dev, on free ports, stopped with it.

`make dev` changes nothing global on a laptop: no package installed, no system service started, no
`pg_hba.conf` edited. It needs `redis-server` and PostgreSQL's `initdb` and `postgres` (Debian and
Ubuntu: `apt-get install redis-server postgresql`, the binaries under /usr/lib/postgresql/<n>/bin;
macOS: `brew install redis postgresql@16`). The data stays in ./.dev between runs (ignored by git;
delete it to start afresh). The cluster trusts local connections only: it listens on 127.0.0.1 and
its own socket directory. As root (a CI machine), PostgreSQL runs as the `postgres` user, since
initdb refuses root. While dev mode runs, ./.dev/urls.json says where they are (`make dev-run`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app.settings import SettingsError

DEV_DIR = Path(".dev")
URLS_FILE = "urls.json"
INSTALL_HINT = ("apt-get install redis-server postgresql (Debian/Ubuntu) or brew install redis "
                "postgresql@16 (macOS); or give --database-url and --redis-url of servers you run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise SettingsError(f"dev mode needs PostgreSQL's {name}: {INSTALL_HINT}")


def _as_postgres_user() -> dict:
    """initdb and postgres refuse root: there they run as `postgres` (what Debian's package creates),
    still as direct children of this process, so that stopping one stops it."""
    if os.geteuid() != 0:
        return {}
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise SettingsError("dev mode as root runs PostgreSQL as the postgres user, and there is none") from None
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _wait(ready, proc: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SettingsError(f"dev mode: {what} exited at start (see its log in {DEV_DIR}/)")
        if ready():
            return
        time.sleep(0.1)
    raise SettingsError(f"dev mode: {what} did not answer within {seconds:.0f} s")


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen, sig: int, seconds: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _postgres(base: Path) -> tuple[subprocess.Popen, int]:
    data, sockets, as_user = base / "pg", base / "pg-sockets", _as_postgres_user()
    sockets.mkdir(parents=True, exist_ok=True)
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    if not (data / "PG_VERSION").exists():
        done = subprocess.run([_pg_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-instructions"], capture_output=True, text=True, **as_user)
        if done.returncode != 0:
            raise SettingsError(f"dev mode: initdb failed: {done.stderr.strip()[-300:]}")
    port = _free_port()
    log = open(base / "postgres.log", "ab")
    proc = subprocess.Popen([_pg_binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                             "-c", "listen_addresses=127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, **as_user)
    _wait(lambda: _answers(port), proc, "PostgreSQL")
    return proc, port


def _redis(base: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SettingsError(f"dev mode needs redis-server: {INSTALL_HINT}")
    (base / "redis").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str((base / "redis").resolve()), "--logfile", str((base / "redis.log").resolve())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: _answers(port), proc, "Redis")
    return proc, port


@contextmanager
def private_servers(base: Path = DEV_DIR) -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL) of servers of dev mode's own, stopped (gracefully) on leaving."""
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    started: list[tuple[subprocess.Popen, int]] = []
    try:
        pg, pg_port = _postgres(base)
        started.append((pg, signal.SIGINT))  # PostgreSQL's fast shutdown
        rd, rd_port = _redis(base)
        started.append((rd, signal.SIGTERM))
        urls = (f"postgresql://postgres@127.0.0.1:{pg_port}/seatwatch_dev", f"redis://127.0.0.1:{rd_port}/0")
        (base / URLS_FILE).write_text(json.dumps({"database_url": urls[0], "redis_url": urls[1]}))
        yield urls
    finally:
        (base / URLS_FILE).unlink(missing_ok=True)
        for proc, sig in reversed(started):
            _stop(proc, sig)


def running_urls(base: Path = DEV_DIR) -> tuple[str, str]:
    """Where a running dev mode's servers are (for `make dev-run`)."""
    try:
        urls = json.loads((base / URLS_FILE).read_text())
    except (OSError, ValueError):
        raise SettingsError("make dev is not running here (no .dev/urls.json): start it first, or give "
                            "--database-url and --redis-url") from None
    return urls["database_url"], urls["redis_url"]
