"""The project's deploy, run for real against a booted Debian test host, with its outside world.

`DeployStack` puts together what a deploy needs on this machine: a `TestHost`, a forwarder from
the host's gateway address to this machine's PostgreSQL (a fresh database), the scraper and
Resend stand-ins listening where the host reaches them, and the operator's environment for
`pyinfra inventory.py deploy.py`. Used by tests/test_deploy.py and by `make sandbox`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.fakes import RESEND_KEY, SCRAPER_TOKEN, FakeResend, FakeScraper
from tests.testhost import NATIVE_ARCH, REPO, TcpForwarder, TestHost, UpDown, log, unique_name

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DOMAIN = "seatwatch.test"
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
# Names the deploy reads from the operator's environment: cleared, then set by the stack.
_APP_NAMES = ("DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", "SCRAPER_URL", "SCRAPER_SECRET_TOKEN",
              "RESEND_API_KEY", "RESEND_API_URL", "NOTIFICATION_FROM_EMAIL", "NEXT_PUBLIC_SITE_URL",
              "CRON_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "SCRAPER_TIMEOUT_SECONDS",
              "HUEY_READ_TIMEOUT_SECONDS", "SEATWATCH_NAME", "NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_ANON_KEY")


# What Oracle Cloud's Ubuntu images ship: only SSH gets in, everything else hits the REJECT.
ORACLE_RULES_V4 = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp -m udp --sport 123 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
"""


class DeployResult:
    def __init__(self, cp: subprocess.CompletedProcess, seconds: float):
        self.returncode, self.output, self.seconds = cp.returncode, cp.stdout + cp.stderr, seconds

    @property
    def changed_ops(self) -> int:
        """Operations that reported a change (the Success column of pyinfra's Grand total)."""
        m = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        if not m:
            raise AssertionError(f"no results table in the pyinfra output:\n{self.output[-3000:]}")
        return 0 if m.group(2) == "-" else int(m.group(2))

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])


class DeployStack(UpDown):
    def __init__(self, name: str | None = None, database: str | None = None, oracle_firewall: bool = False,
                 suite: str | None = None, site: bool = False):
        self.oracle_firewall = oracle_firewall
        self.site = site  # the Next.js site too: the fixture app (tests/sitefixture.py) with SEATWATCH_SITE_SOURCE
        self.site_env: dict[str, str] = {}
        self.host = TestHost(name or unique_name(), suite=suite)  # suite: tests/testhost.SUITES
        self.database = database or f"seatwatch_deploy_{self.host.name}"
        self.cron_secret = "cron-" + uuid.uuid4().hex
        self.redis_password = "redis " + uuid.uuid4().hex[:16]  # a space on purpose: quoting must hold
        self._closers: list = []
        self.scraper: FakeScraper | None = None
        self.resend: FakeResend | None = None

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> None:
        # Deploy a snapshot: the work tree may change under a long test, and the release id
        # (a hash of the sources) must stay the same between the deploys this stack compares.
        self.project = self.copy_project()
        if self.site:
            self.site_env = self.site_settings(self.site_checkout())
        self.host.__enter__()
        self._closers.append(self.host.down)
        gw = self.host.gateway
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"drop database if exists {self.database} with (force)")
            conn.execute(f"create database {self.database}")
        self._closers.append(self._drop_database)
        forwarder = TcpForwarder(gw, 5432, "127.0.0.1", 5432).__enter__()
        self._closers.append(forwarder.close)
        if self.oracle_firewall:
            self.host.ssh("sudo mkdir -p /etc/iptables && sudo tee /etc/iptables/rules.v4 >/dev/null && "
                          "sudo iptables-restore < /etc/iptables/rules.v4", input=ORACLE_RULES_V4)
        self.scraper = FakeScraper(host=gw).start()
        self._closers.append(self.scraper.stop)
        self.resend = FakeResend(host=gw).start()
        self._closers.append(self.resend.stop)

    def _drop_database(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"drop database if exists {self.database} with (force)")

    def down(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception as exc:  # keep cleaning up
                log(f"cleanup step failed: {exc!r}")

    # ------------------------------------------------------------------ the operator's side
    @property
    def dsn(self) -> str:
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{self.database}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _APP_NAMES and not k.startswith("SEATWATCH_")}
        env.update(self.host.pyinfra_env())
        env.update({
            "SEATWATCH_DOMAIN": DOMAIN,
            "SEATWATCH_TLS": "internal",
            "SEATWATCH_BOOTSTRAP_SCHEMA": "1",  # an empty database here; never on production
            "SEATWATCH_HEALTH_TIMEOUT": str(45 * self.host.slowdown),
            "DATABASE_URL": f"postgresql://postgres@{self.host.gateway}:5432/{self.database}",
            "REDIS_PASSWORD": self.redis_password,
            "SCRAPER_URL": self.scraper.url,
            "SCRAPER_SECRET_TOKEN": SCRAPER_TOKEN,
            "RESEND_API_KEY": RESEND_KEY,
            "RESEND_API_URL": self.resend.url,
            "NOTIFICATION_FROM_EMAIL": "PickMyClass <alerts@seatwatch.test>",
            "NEXT_PUBLIC_SITE_URL": "https://pickmyclass.example",
            "CRON_SECRET": self.cron_secret,
            "SUPABASE_SERVICE_ROLE_KEY": "srk-" + self.cron_secret,
            "SCRAPER_TIMEOUT_SECONDS": "10",
            "HUEY_READ_TIMEOUT_SECONDS": "5",  # PM2 reloads wait for the blocking read: keep it short here
        })
        if self.host.arch != NATIVE_ARCH:  # qemu-user cannot speak nf_tables netlink: no firewall there
            env["SEATWATCH_FIREWALL"] = "off"
        env.update(self.site_env)
        return env

    def site_checkout(self, broken: bool = False) -> Path:
        """A checkout of the site fixture (the broken one's page answers 500), removed at the end."""
        from tests import sitefixture

        dest = Path(tempfile.mkdtemp(prefix="seatwatch-site-")) / "site"
        self._closers.append(lambda: shutil.rmtree(dest.parent, ignore_errors=True))
        return sitefixture.checkout(dest, broken=broken)

    def site_settings(self, source: Path) -> dict[str, str]:
        from tests import sitefixture

        secrets = sitefixture.secrets_file(source.parent / "site-secrets.env")
        return {"SEATWATCH_SITE_SOURCE": str(source), "SEATWATCH_SITE_BUILD_DIR": str(sitefixture.SITE_BUILD_CACHE),
                "SEATWATCH_SITE_SECRETS_ENV": str(secrets), **sitefixture.PUBLIC_VARS}

    def deploy(self, project: Path | None = None, dry: bool = False, timeout: float | None = None,
               extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> DeployResult:
        cmd = [PYINFRA, "--dry", "--json"] if dry else [PYINFRA, "-y"]
        timeout = timeout or (900 if self.host.arch == NATIVE_ARCH else 3600)  # qemu: about 8x slower
        t0 = time.monotonic()
        cp = subprocess.run([*cmd, *args, "inventory.py", "deploy.py"], cwd=project or self.project,
                            env={**self.env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)
        return DeployResult(cp, time.monotonic() - t0)

    def start_deploy(self, project: Path | None = None) -> subprocess.Popen:
        """A deploy in the background, in its own process group (the test kills it, like a dropped laptop)."""
        return subprocess.Popen([PYINFRA, "-y", "inventory.py", "deploy.py"], cwd=project or self.project,
                                env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def release_id(self, project: Path) -> str:
        """The release id the deploy of `project` would use (the same function the roles call)."""
        cp = subprocess.run([sys.executable, "-c", "from roles.common import release_bundle; "
                             "print(release_bundle()[0])"], cwd=project, env=self.env(),
                            capture_output=True, text=True, timeout=120, check=True)
        return cp.stdout.strip().splitlines()[-1]

    def planned_changes(self, project: Path | None = None) -> list[str]:
        """`pyinfra --dry --json`: names of operations with a host that would change."""
        res = self.deploy(project=project, dry=True)
        if res.returncode != 0:
            raise AssertionError(f"dry run failed:\n{res.tail()}")
        start = res.output.index("{")
        plan, _ = json.JSONDecoder().raw_decode(res.output[start:])
        return [op["name"] for op in plan["plan"] if op["hosts_with_change"]]

    def copy_project(self, prefix: str = "seatwatch-deploy-") -> Path:
        dest = Path(tempfile.mkdtemp(prefix=prefix))
        for entry in ("inventory.py", "deploy.py", "pyproject.toml", "requirements.lock", "roles", "templates", "app",
                      "scripts"):
            src = REPO / entry
            if src.is_dir():
                shutil.copytree(src, dest / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dest / entry)
        self._closers.append(lambda: shutil.rmtree(dest, ignore_errors=True))
        return dest

    def changed_copy(self, tag: str) -> Path:
        """A copy of the project that makes a new, good release (one more file in the bundle)."""
        dest = self.copy_project(f"seatwatch-{tag}-")
        (dest / "app" / "release-note.txt").write_text(f"{tag}\n")
        return dest

    def crashing_worker_copy(self) -> Path:
        """A copy whose web is fine but whose worker exits at once, every time PM2 restarts it."""
        dest = self.copy_project("seatwatch-crashloop-")
        with open(dest / "app" / "queue" / "worker.py", "a") as fh:
            fh.write('\n\ndef run(settings, scheduler=True):\n'
                     '    raise SystemExit("deliberately crashing worker (deploy test)")\n')
        return dest

    def broken_copy(self) -> Path:
        """A copy of the project whose web process cannot start (a release that never gets healthy)."""
        dest = self.copy_project("seatwatch-broken-")
        with open(dest / "app" / "web" / "routes.py", "a") as fh:
            fh.write('\n\nraise RuntimeError("deliberately broken release (deploy test)")\n')
        return dest

    # ------------------------------------------------------------------ looking at the host
    def https(self, path: str, method: str = "GET", headers: dict | None = None,
              port: int = 443) -> tuple[int, str]:
        """A request to the host's Caddy, by name (Caddy picks the site by SNI/Host)."""
        cmd = ["curl", "-sk", "--max-time", "15", "-X", method, "-o", "-", "-w", "\n%{http_code}",
               "--resolve", f"{DOMAIN}:{port}:{self.host.address}"]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        scheme = "https" if port == 443 else "http"
        cp = subprocess.run([*cmd, f"{scheme}://{DOMAIN}:{port}{path}"], capture_output=True, text=True)
        body, _, code = cp.stdout.rpartition("\n")
        return int(code or 0), body

    def head(self, path: str, port: int = 443) -> str:
        """The status line and headers of Caddy's answer to a GET."""
        scheme = "https" if port == 443 else "http"
        cp = subprocess.run(["curl", "-sk", "--max-time", "15", "-D", "-", "-o", "/dev/null",
                             "--resolve", f"{DOMAIN}:{port}:{self.host.address}", f"{scheme}://{DOMAIN}:{port}{path}"],
                            capture_output=True, text=True)
        return cp.stdout

    def upload(self, path: str, body_file: Path, chunked: bool = False) -> tuple[int, float, int, str]:
        """POST the file through Caddy (HTTP/1.1, the body sent at once, no `Expect: 100-continue`):
        (status, seconds, body bytes sent before the server closed, the answer's head)."""
        cmd = ["curl", "-sk", "--http1.1", "--max-time", "60", "-H", "Expect:", "--data-binary", f"@{body_file}",
               "-D", "-", "-o", "/dev/null", "-w", "\n%{http_code} %{time_total} %{size_upload}",
               "--resolve", f"{DOMAIN}:443:{self.host.address}", f"https://{DOMAIN}{path}"]
        if chunked:
            cmd[1:1] = ["-H", "Transfer-Encoding: chunked"]
        cp = subprocess.run(cmd, capture_output=True, text=True)
        head, _, summary = cp.stdout.rpartition("\n")
        code, seconds, sent = summary.split()
        return int(code), float(seconds), int(float(sent)), head

    def wait_healthy(self, timeout: float | None = None) -> tuple[int, str]:
        timeout = timeout or 90 * self.host.slowdown
        deadline = time.monotonic() + timeout
        code, body = 0, ""
        while time.monotonic() < deadline:
            code, body = self.https("/api/monitoring/health")
            if code in (200, 503):
                return code, body
            time.sleep(1)
        raise AssertionError(f"no health answer through Caddy within {timeout}s (last {code}: {body[:300]})")

    def forget_cron_slots(self) -> None:
        """Let the test's own /api/cron call run. The deployed scheduler runs (or, at start,
        catches up) this hour's slots by itself, and a slot runs once (its marker), so the test's
        trigger would otherwise be answered "Already ran for this slot"."""
        auth = f"REDISCLI_AUTH='{self.redis_password}'"
        self.host.ssh(f"{auth} redis-cli --no-auth-warning -h 127.0.0.1 --scan --pattern '*cron-slot:*'"
                      f" | xargs -r env {auth} redis-cli --no-auth-warning -h 127.0.0.1 del")

    def sql(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


class Reporter:
    """Lines printed past pytest's capture: a deploy test's timings are part of what it shows.

    Give it the session's config (a fixture's `pytestconfig`) once; before that it prints to stderr."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.config = None

    def __call__(self, msg: str) -> None:
        line = f"[{self.prefix}] {msg}"
        if self.config is None:
            print(line, file=sys.__stderr__, flush=True)
            return
        capture = self.config.pluginmanager.getplugin("capturemanager")
        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled():
            terminal.write_line("")
            terminal.write_line(line)


@contextmanager
def freshly_deployed(report: Reporter, timings: dict[str, float], label: str, **stack_kwargs):
    """A DeployStack whose host is up and deployed once: the time each took goes into `timings`
    and the report; a failed deploy fails the module; at the end every timing is reported."""
    t0 = time.monotonic()
    with DeployStack(**stack_kwargs) as stack:
        timings["host up"] = time.monotonic() - t0
        res = stack.deploy()
        timings["fresh deploy"] = res.seconds
        report(f"{label}: host up in {timings['host up']:.1f}s; fresh deploy took {res.seconds:.1f}s")
        assert res.returncode == 0, f"fresh deploy failed:\n{res.tail(120)}"
        yield stack
        report(f"{label} timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

