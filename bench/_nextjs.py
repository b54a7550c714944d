"""A Next.js standalone server alone (issue 30): the site fixture's build, `node server.js`.

The build is the one the deploy tests make and cache (tests/sitefixture.py's SITE_BUILD_CACHE:
`npm ci` + `next build`, output "standalone"); it is unpacked into a temporary directory and its
server started alone on 127.0.0.1, asked for its page once (as a monitor would, so the route is
loaded), left to settle, and its RSS, PSS, USS and anon/file split read (bench/_memfig.py). On
the host the same process is on_host's `site` role, apart from its PM2 daemon. Skipped, with the
reason, when no cached build exists (the deploy test or `make sandbox` with the site makes one).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import _memfig
from bench._env import free_port


def cached_build() -> Path | None:
    from tests.sitefixture import SITE_BUILD_CACHE

    builds = sorted(SITE_BUILD_CACHE.glob("site-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return builds[-1] if builds else None


def measure(settle_s: float = 5) -> dict:
    build = cached_build()
    node = shutil.which("node")
    if not build or not node:
        return {"skipped": "no cached site build (tests/sitefixture.SITE_BUILD_CACHE)" if not build
                else "no node on PATH"}
    workdir = Path(tempfile.mkdtemp(prefix="seatwatch-nextjs-"))
    try:
        with tarfile.open(build) as tar:
            tar.extractall(workdir, filter="data")
        port = free_port()
        proc = subprocess.Popen([node, "server.js"], cwd=workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env={"PATH": "/usr/bin:/bin", "PORT": str(port), "HOSTNAME": "127.0.0.1",
                                     "NODE_ENV": "production"})
        try:
            started = _memfig.of_pid(proc.pid)  # the process exists; the figure is taken below
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                        status = resp.status
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        return {"skipped": f"node server.js did not answer (exit {proc.poll()})"}
                    time.sleep(0.2)
            time.sleep(settle_s)
            return {"build": build.name, "node": subprocess.run([node, "--version"], capture_output=True,
                                                               text=True).stdout.strip(),
                    "first_page_status": status, "at_rest": _memfig.of_pid(proc.pid),
                    "at_spawn_rss_mb": started["rss"]}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
