"""The halves of items 6 and 7 that need the deployed test host (tests/deploystack.py).

- `stack_memory(host)`: RSS of every process of the stack on the host (web, worker, PM2's daemon,
  Caddy, Redis; with the site on, its Next.js server and its own PM2 daemon), from `ps` over ssh. Target: 200 MB for the whole stack (issue 20).
- `health_through_caddy(host)`: p50/p99 of the health URL at 100 requests/s through Caddy
  (HTTPS, by name, as a monitor reaches it), open loop from this machine (bench/health_latency.py).

The deploy test harness calls them with its TestHost once the stack is up and healthy, e.g. in
tests/test_deploy.py: `from bench import on_host; on_host.report(stack.host)`; `report` prints
the figures and writes bench/results/on_host.json, which bench/report.py folds into
bench/results/README.md. Against a running sandbox (`make sandbox`):
`python -m bench.on_host swsandbox`. Not run by `make bench` (it needs root and the test host).
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench.health_latency import open_loop  # noqa: E402

DOMAIN = "seatwatch.test"  # tests/deploystack.py's site name
STACK_TARGET_MB = 200

# process -> how to recognise it in `ps -o args`
ROLES = (
    # with the site on (roles/site.py): Next's standalone server and the site user's own PM2 daemon
    ("site", ("server.js", "next-server")),
    ("site_pm2", ("God Daemon (/var/lib/seatwatch-site",)),
    ("web", ("app web",)),
    ("worker", ("app worker", "huey_consumer")),
    ("pm2", ("PM2", "God Daemon")),
    ("caddy", ("caddy",)),
    ("redis", ("redis-server",)),
)


def stack_memory(host) -> dict:
    out = host.ssh("ps -eo rss=,args=", quiet=True).stdout
    mb = {name: 0.0 for name, _ in ROLES}
    for line in out.splitlines():
        rss, _, args = line.strip().partition(" ")
        for name, needles in ROLES:
            if any(n in args for n in needles):
                mb[name] += int(rss) * 1024 / 1e6
                break
    mb["stack"] = sum(mb.values())
    return {k: round(v, 1) for k, v in mb.items()}


class _CaddyConnection(http.client.HTTPSConnection):
    """HTTPS to the host's address with the site's name in SNI and Host (Caddy picks the site by
    them); the test host's certificate is Caddy's own internal one, so it is not verified."""

    def __init__(self, address: str, timeout: float = 10):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        super().__init__(DOMAIN, 443, timeout=timeout, context=ctx)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=DOMAIN)


def health_through_caddy(host, rate: float = 100, seconds: float = 15) -> dict:
    open_loop(rate=rate, seconds=1, connect=lambda: _CaddyConnection(host.address))  # warm
    return open_loop(rate=rate, seconds=seconds, connect=lambda: _CaddyConnection(host.address))


def report(host) -> dict:
    figures = {"stack_memory_mb": stack_memory(host), "health_through_caddy": health_through_caddy(host)}
    m, h = figures["stack_memory_mb"], figures["health_through_caddy"]
    print(f"on the test host: stack {m['stack']:.0f} MB (target <= {STACK_TARGET_MB}): {m}")
    print(f"  health through Caddy at {h['rate']:.0f}/s: p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
          f"codes {h['codes']}")
    S.write("on_host", figures)
    return figures


if __name__ == "__main__":
    from tests.testhost import TestHost

    report(TestHost.load(sys.argv[1] if len(sys.argv) > 1 else "swsandbox"))
