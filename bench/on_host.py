"""The halves of items 6 and 7 that need the deployed test host (tests/deploystack.py).

- `stack_memory(host)`: RSS of every process of the stack on the host (web, worker, PM2's daemon,
  Caddy, Redis; with the site on, its Next.js server and its own PM2 daemon), from `ps` over ssh.
- `stack_smaps(host)`: the same processes' PSS, USS and anonymous/file-backed split, from each
  one's /proc/<pid>/smaps_rollup and status read as root over ssh (bench/_memfig.py). The whole
  stack's figure is the sum of PSS: the physical memory all its processes hold together, a page
  they share (the node binary mapped by PM2 and Next.js, libpython by web and worker) counted
  once; the RSS sum counts it in every process. Targets (issue 20/30): 200 MB for the backend's
  stack, 350 MB with the site, judged on the PSS sum; the RSS sum is printed beside it. The
  `site` role is the Next.js standalone server alone (`node server.js`), reported apart from
  its PM2 daemon (`site_pm2`).
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

from bench import _memfig, _stats as S  # noqa: E402
from bench.health_latency import open_loop  # noqa: E402

DOMAIN = "seatwatch.test"  # tests/deploystack.py's site name
STACK_TARGET_MB = 200
STACK_WITH_SITE_TARGET_MB = 350

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


def role_of(args: str) -> str | None:
    for name, needles in ROLES:
        if any(n in args for n in needles):
            return name
    return None


def stack_memory(host) -> dict:
    out = host.ssh("ps -wweo rss=,args=", quiet=True).stdout
    mb = {name: 0.0 for name, _ in ROLES}
    for line in out.splitlines():
        rss, _, args = line.strip().partition(" ")
        name = role_of(args)
        if name:
            mb[name] += int(rss) * 1024 / 1e6
    mb["stack"] = sum(mb.values())
    return {k: round(v, 1) for k, v in mb.items()}


def stack_smaps(host, sudo: str = "sudo ") -> dict:
    """Per role (several processes of one role summed) and for the whole stack: RSS, PSS, USS,
    anon and file figures in MB; `stack` sums every role, `backend` leaves the site's two out.
    One ssh for the process list, one for every process's smaps_rollup and status (as root:
    they belong to other users)."""
    pids: dict[int, str] = {}
    # -ww: the whole command line, never cut at the terminal's width (or COLUMNS)
    for line in host.ssh("ps -wweo pid=,args=", quiet=True).stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        name = role_of(args)
        if name and not args.startswith(("ps ", "sh -c", "bash -c")):
            pids[int(pid)] = name
    # a process that ends between the two calls has no files: its cat fails, the others go on
    script = "; ".join(f"echo '=== {p}'; cat /proc/{p}/smaps_rollup /proc/{p}/status 2>/dev/null"
                       for p in pids)
    out = host.ssh(f"{sudo}sh -c \"{script}; true\"", quiet=True).stdout
    per_role: dict[str, list[dict]] = {name: [] for name, _ in ROLES}
    for chunk in out.split("=== ")[1:]:
        pid, _, text = chunk.partition("\n")
        try:
            per_role[pids[int(pid)]].append(_memfig.parse(text, text))
        except ValueError:
            continue  # the process ended between the two calls
    if pids and not any(per_role.values()):
        raise RuntimeError(f"no smaps_rollup read for any of {sorted(pids)} (root needed): {out[:200]!r}")
    figures = {name: _memfig.total(figs) for name, figs in per_role.items()}
    figures["backend"] = _memfig.total([figures[n] for n in figures if n not in ("site", "site_pm2")])
    figures["stack"] = _memfig.total([figures[n] for n, _ in ROLES])
    return {k: {f: round(v, 1) for f, v in fig.items()} for k, fig in figures.items()}


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


def health_through_caddy_under_drain(stack, n: int = 10_000, latency: float = 0.05,
                                     rate: float = 100) -> dict:
    """Health through Caddy while the host's worker drains n checks (tests/deploystack.DeployStack:
    its stand-in scraper, set to answer in `latency`, and its database on this machine): n
    watched sections (even class numbers: one cron group) are enqueued by one POST /api/cron
    through Caddy, as the real cron does it, and health is loaded at `rate` through Caddy for
    n*latency/4 s, the drain's lower bound with the worker's 4 threads."""
    import json
    import time

    from bench._env import seed_watchers

    term = "2999"
    nbrs = [f"{20000 + 2 * i:05d}" for i in range(n)]
    seed_watchers(stack.dsn, term, nbrs, prefix="drain")
    for nbr in nbrs:
        stack.scraper.set_section(term, nbr, seats_available=0, seats_capacity=100)
    stack.scraper.delay = latency
    stack.forget_cron_slots()
    before = len(stack.scraper.calls)
    started = time.monotonic()
    code, body = stack.https("/api/cron?group=even", method="POST",
                             headers={"Authorization": f"Bearer {stack.cron_secret}"})
    if code != 200:
        raise RuntimeError(f"/api/cron answered {code}: {body[:200]}")
    enqueued = json.loads(body).get("sections_enqueued")
    load = open_loop(rate=rate, seconds=n * latency / 4, connect=lambda: _CaddyConnection(stack.host.address))
    target = enqueued if isinstance(enqueued, int) and enqueued > 0 else n
    S.wait_for(lambda: len(stack.scraper.calls) - before >= target, timeout=n * latency * 3, interval=0.5)
    return {"n": n, "enqueued": enqueued, "latency_s": latency, "drain_seconds": time.monotonic() - started,
            "health_through_caddy": load}


def report(host) -> dict:
    figures = {"stack_memory_mb": stack_memory(host), "stack_smaps_mb": stack_smaps(host),
               "health_through_caddy": health_through_caddy(host)}
    m, h = figures["stack_memory_mb"], figures["health_through_caddy"]
    print(f"on the test host: stack {m['stack']:.0f} MB RSS: {m}")
    sm = figures["stack_smaps_mb"]
    site = sm["site"]["rss"] > 0
    print(f"  stack PSS sum {sm['stack']['pss']:.0f} MB (target <= "
          f"{STACK_WITH_SITE_TARGET_MB if site else STACK_TARGET_MB}); backend alone {sm['backend']['pss']:.0f} "
          f"MB PSS (target <= {STACK_TARGET_MB})")
    for name, fig in sm.items():
        print(f"  {name}: {_memfig.brief(fig)}")
    print(f"  health through Caddy at {h['rate']:.0f}/s: p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
          f"codes {h['codes']}")
    S.write(results_name(figures), figures)
    return figures


def results_name(figures: dict) -> str:
    """on_host.json for a backend-only host, on_host_site.json for one with the site: the two
    hosts' figures differ (with the site, PM2's daemon shares the node binary's pages with two
    other node processes), so each target is judged on the host it is about."""
    return "on_host_site" if figures["stack_smaps_mb"]["site"]["rss"] > 0 else "on_host"


def own_stack(name: str, database: str, n: int, site: bool = False) -> dict:
    """A test host of its own (tests/deploystack.py), deployed (with the fixture site when
    `site`), measured at rest and under a drain, then removed:
    `python -m bench.on_host --own NAME DATABASE [N] [--site]` (root)."""
    from tests.deploystack import DeployStack

    # the site runs on Debian 13 (its Node.js 20; Debian 12 would need NodeSource, unreachable from here)
    with DeployStack(name, database=database, site=site, suite="trixie" if site else None) as stack:
        res = stack.deploy()
        if res.returncode != 0:
            raise SystemExit(f"deploy failed: {res.tail(30)}")
        stack.wait_healthy()
        figures = report(stack.host)
        drain = health_through_caddy_under_drain(stack, n=n)
        h = drain["health_through_caddy"]
        print(f"  health through Caddy under a {n}-check drain: p50 {h['p50_ms']:.1f} ms, p99 "
              f"{h['p99_ms']:.1f} ms, max {h['max_ms']:.0f} ms, codes {h['codes']}; drain "
              f"{drain['drain_seconds']:.0f} s")
        figures["under_drain"] = drain
        S.write(results_name(figures), figures)
        return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--own"]:
        rest = [a for a in sys.argv[4:] if a != "--site"]
        own_stack(sys.argv[2], sys.argv[3], int(rest[0]) if rest else 10_000, site="--site" in sys.argv)
    else:
        from tests.testhost import TestHost

        report(TestHost.load(sys.argv[1] if len(sys.argv) > 1 else "swsandbox"))
