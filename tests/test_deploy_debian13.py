"""The deploy's core path on a booted Debian 13 "trixie" host, beside Debian 12's (tests/test_deploy.py).

In order, on one host: a fresh deploy, what it met there (Python 3.13, Redis 8 running the rendered
config, Node.js 20 with PM2, Caddy), a second deploy with no change, the gate (a release that never gets
healthy is rolled back), a cron trigger through Caddy ending in an email, a reboot back to healthy.
With the site (SEATWATCH_SITE_SOURCE: the fixture app of tests/fixtures/site, built on this machine) deployed
beside the backend: through Caddy its page with the public variable baked in, its API route with the client's
Host and address, the backend's routes still the backend's, 404 for the Cloudflare-only /api/queue/*; the site's
user cannot read the backend's env file; the no-change deploy neither rebuilds nor restarts the site; a site
release whose page answers 500 is rolled back; the site is back after the reboot.
The same checks as Debian 12's where they apply (called from tests/test_deploy.py); the long fault
scenarios run on Debian 12 only. SEATWATCH_TEST_ARCH=arm64 runs it under qemu (`make test-arm64`);
SEATWATCH_TEST_CORE_SUITE=bookworm runs the same core path on Debian 12, for figures side by side;
SEATWATCH_TEST_HOSTNAME names the host (two runs on one machine).
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests import test_deploy as core
from tests.conftest import TEST_DB
from tests.deploystack import Reporter, freshly_deployed
from tests.testhost import NATIVE_ARCH, unique_name

pytestmark = pytest.mark.deploy

SUITE = os.environ.get("SEATWATCH_TEST_CORE_SUITE", "trixie")
# what each suite's archive gives the deploy (README "Supported systems")
MEETS = {
    "trixie": {"version_id": "13", "python": "3.13.", "redis": "8.", "redis_conf": "8.0", "node": "20."},
    "bookworm": {"version_id": "12", "python": "3.11.", "redis": "7.", "redis_conf": "7.0", "node": "18."},
}[SUITE]
TIMINGS: dict[str, float] = {}
SITE = SUITE == "trixie"  # Debian 12's Node.js 18 is too old for Next.js 16: NodeSource, unreachable from here
SITE_USER = "seatwatch-site"
site_only = pytest.mark.skipif(not SITE, reason="the site runs on Debian 13's Node.js 20 (Debian 12: NodeSource)")


report = Reporter("deploy test debian13")


@pytest.fixture(scope="module")
def stack(pytestconfig):
    report.config = pytestconfig
    name = os.environ.get("SEATWATCH_TEST_HOSTNAME") or unique_name("swt13")
    arch = os.environ.get("SEATWATCH_TEST_ARCH") or NATIVE_ARCH
    with freshly_deployed(report, TIMINGS, f"{SUITE}/{arch}", name=name, database=f"{TEST_DB}_d13_{name}",
                          suite=SUITE, oracle_firewall=core.ORACLE, site=SITE) as s:
        yield s


def test_debian13_is_what_was_deployed_to(stack):
    assert stack.host.ssh(". /etc/os-release && echo $VERSION_ID").stdout.strip() == MEETS["version_id"]


def test_stack_runs_on_the_distributions_own_versions(stack):
    core.assert_stack_runs(stack)
    h = stack.host
    rel = h.ssh("readlink /opt/seatwatch/current").stdout.strip()
    met = {
        "python": h.ssh(f"{rel}/venv/bin/python -c 'import platform; print(platform.python_version())'").stdout.strip(),
        "redis": h.ssh("redis-server --version").stdout.split("v=")[1].split()[0],
        "node": h.ssh("node --version").stdout.strip().lstrip("v"),
        "pm2": h.ssh(f"sudo -u {core.APP_USER} -H env PM2_HOME=/home/{core.APP_USER}/.pm2 pm2 --version")
               .stdout.strip().splitlines()[-1],
        "caddy": h.ssh("caddy version").stdout.strip().lstrip("v").split()[0],  # Debian's prints 2.6.2
    }
    report("met: " + ", ".join(f"{k} {v}" for k, v in met.items()))
    assert met["python"].startswith(MEETS["python"])
    assert met["redis"].startswith(MEETS["redis"]), "Debian 13 ships Redis 8"
    assert met["node"].startswith(MEETS["node"])
    assert met["pm2"] == "7.0.4"
    assert met["caddy"].startswith("2.")


def test_redis8_runs_the_rendered_config(stack):
    assert f"Rendered for Redis {MEETS['redis_conf']}" in stack.host.ssh("sudo head -n 3 /etc/redis/redis.conf").stdout
    core.test_redis_is_bound_to_localhost_and_needs_the_password(stack)


def test_caddy_answers_and_proxies_the_service(stack):
    core.test_caddy_answers_on_80_and_443_and_proxies_the_service(stack)


def test_firewall(stack):
    core.test_firewall_opens_ssh_and_web_only_on_ipv4_and_ipv6_and_persists_it(stack)


def test_a_big_upload_gets_413_at_once(stack, tmp_path):
    core.test_a_50_mb_upload_through_caddy_gets_413_at_once_and_nothing_is_spooled(stack, tmp_path)


def test_env_file_is_roots_and_only_readable_by_the_app_user(stack):
    core.test_env_file_is_roots_and_only_readable_by_the_app_user(stack)


# --------------------------------------------------------------------------- the site (Next.js) beside the backend

def site_proc(stack) -> dict:
    out = stack.host.ssh(f"sudo -u {SITE_USER} env PM2_HOME=/var/lib/{SITE_USER}/.pm2 pm2 jlist").stdout
    procs = {p["name"]: p for p in json.loads(out[out.index("["):])}
    assert set(procs) == {"site"}, procs.keys()
    return procs["site"]


def assert_site_serves(stack, marker: str = "site-url=https://pickmyclass.example") -> str:
    code, body = stack.https("/")
    body = body.replace("<!-- -->", "")  # React's separator between adjacent text nodes
    assert code == 200 and marker in body, (code, body[:500])
    return body


@site_only
def test_site_page_through_caddy_with_the_public_variable_baked_in(stack):
    body = assert_site_serves(stack)
    assert "supabase-url=https://fixtureproject.supabase.co" in body
    assert "middleware-host=seatwatch.test" in body, "the site's middleware sees the client's Host"
    proc = site_proc(stack)
    assert proc["pm2_env"]["status"] == "online"
    assert stack.host.ssh(f"ps -o user= -p {proc['pid']}").stdout.strip() == SITE_USER
    # Node (Next renames its process title to next-server), never Bun
    assert "node" in stack.host.ssh(f"sudo readlink -f /proc/{proc['pid']}/exe").stdout.rsplit("/", 1)[-1]
    # every listener on port 3000 (0x0BB8, state 0A = LISTEN) is on 127.0.0.1 (0100007F): none on IPv6 or any
    tables = stack.host.ssh("cat /proc/net/tcp /proc/net/tcp6").stdout.splitlines()
    listeners = [f[1].split(":")[0] for f in (line.split() for line in tables)
                 if len(f) > 3 and f[1].endswith(":0BB8") and f[3] == "0A"]
    assert listeners == ["0100007F"], listeners
    chunk = re.search(r'/_next/static/[^"]+\.js', body).group(0)
    head = stack.head(chunk)
    assert head.startswith("HTTP/2 200") and "immutable" in head.lower() and "max-age=31536000" in head, head


@site_only
def test_site_api_route_gets_the_clients_host_and_address_and_its_secret(stack):
    code, body = stack.https("/api/hello")
    assert code == 200, body
    answer = json.loads(body)
    assert answer["ok"] and answer["host"] == "seatwatch.test"
    assert answer["forwarded_for"] == stack.host.gateway, "the client's address reaches Next.js"
    assert answer["secret_set"] is True, "the site's env file (site-secrets.env) reaches the server"


@site_only
def test_site_body_limit_fits_forms_and_refuses_big_uploads(stack, tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 200_000)
    big.write_bytes(b"x" * 5_000_000)
    code, _, _, _ = stack.upload("/api/hello", small)
    assert code == 200
    code, _, _, _ = stack.upload("/api/hello", big)
    assert code == 413


@site_only
def test_backend_routes_stay_the_backends_and_the_queue_route_never_reaches_node(stack):
    code, body = stack.https("/api/monitoring/health")
    assert code == 200 and "checks" in json.loads(body)
    assert stack.https("/api/cron")[0] == 401  # Bottle's answer: it wants the token
    code, body = stack.https("/api/cron", headers={"Authorization": f"Bearer {stack.cron_secret}"})
    assert code in (200, 409) and "success" in json.loads(body), body
    for method in ("GET", "POST"):
        code, body = stack.https("/api/queue/process-section", method=method)
        assert (code, body) == (404, "Not found"), (code, body[:200])  # Caddy's own answer, not Next's page
    assert stack.https("/somewhere/else")[0] == 404  # Next's own 404 page
    # the fixture's middleware logs every path Node sees: /somewhere/else did reach it, /api/queue/* never
    log = f"/var/lib/{SITE_USER}/.pm2/logs/site-out.log"
    deadline = time.monotonic() + 10
    while "fixture-middleware /somewhere/else" not in stack.host.ssh(f"sudo cat {log}").stdout:
        assert time.monotonic() < deadline, "the middleware's log line never came"
        time.sleep(0.5)
    assert "fixture-middleware /api/queue" not in stack.host.ssh(f"sudo cat {log}").stdout


@site_only
def test_the_site_user_cannot_read_the_backends_env_file(stack):
    h = stack.host
    denied = h.ssh(f"sudo -u {SITE_USER} cat /etc/seatwatch/app.env", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert h.ssh(f"id -nG {SITE_USER}").stdout.split() == [SITE_USER]
    assert h.ssh("stat -c '%U:%G %a' /etc/seatwatch/site.env").stdout.strip() == f"root:{SITE_USER} 640"
    assert h.ssh(f"sudo -u {core.APP_USER} cat /etc/seatwatch/site.env", check=False).returncode != 0
    assert h.ssh(f"sudo -u {SITE_USER} test -w /usr/local/lib/seatwatch/site-run", check=False).returncode != 0
    from bench import on_host

    rss = on_host.stack_memory(h)  # the site's server and its PM2 daemon beside the backend's stack
    report("RSS at rest (MB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    assert rss["site"] > 0 and rss["site_pm2"] > 0 and rss["pm2"] > 0, rss
    smaps = on_host.stack_smaps(h)  # what the stack takes from the host: PSS, shared pages once
    report("PSS at rest (MB): " + ", ".join(f"{k} {v['pss']}" for k, v in smaps.items())
           + f"; RSS sum {smaps['stack']['rss']}, anon sum {smaps['stack']['rss_anon']}")
    assert 0 < smaps["site"]["pss"] <= smaps["site"]["rss"], smaps["site"]


def test_second_deploy_changes_nothing(stack):
    site_pid = site_proc(stack)["pid"] if SITE else None
    assert stack.planned_changes() == []
    res = stack.deploy()
    TIMINGS["no-change deploy"] = res.seconds
    report(f"no-change deploy took {res.seconds:.1f}s")
    assert res.returncode == 0, res.tail()
    assert res.changed_ops == 0, res.tail(80)
    if SITE:
        assert "building the site" not in res.output, "nothing changed: the cached build is used"
        assert site_proc(stack)["pid"] == site_pid, "the site was not restarted"


@site_only
def test_a_site_release_whose_page_answers_500_is_rolled_back(stack):
    h = stack.host
    before = h.ssh("readlink /opt/seatwatch-site/current").stdout.strip()
    t0 = time.monotonic()
    res = stack.deploy(extra_env=stack.site_settings(stack.site_checkout(broken=True)))
    TIMINGS["site: failed release rolled back"] = time.monotonic() - t0
    assert res.returncode != 0, "a site release answering 500 must fail the deploy"
    assert "the site's / answers HTTP 500" in res.output and "ROLLED BACK to site release" in res.output, \
        res.tail(80)
    assert h.ssh("readlink /opt/seatwatch-site/current").stdout.strip() == before
    assert_site_serves(stack)  # the old page, served again
    assert "site-activate release=" in h.ssh("sudo tail -n 3 /var/log/seatwatch/deploys.log").stdout
    assert stack.planned_changes() == []  # and the good site is what the settings want: nothing to do
    cp = core._ops(stack, "releases")  # `make releases` lists the site's builds after the backend's
    assert cp.returncode == 0, cp.stderr
    site_rows = cp.stdout.split("site build (key)", 1)[1].splitlines()[1:]
    key = before.rsplit("/", 1)[1]
    assert any(r.startswith(key) and "current,active,gated" in r for r in site_rows), cp.stdout
    assert any("never-gated" in r for r in site_rows), cp.stdout  # the 500 release


def test_gate_rolls_back_a_release_that_never_gets_healthy(stack):
    t0 = time.monotonic()
    core.test_unhealthy_release_rolls_back(stack)
    TIMINGS["gate: failed deploy rolled back"] = time.monotonic() - t0


def test_cron_through_caddy_checks_and_emails(stack):
    core.test_cron_through_caddy_checks_and_emails(stack)


@site_only
def test_the_way_back_turns_the_site_off_and_on_again(stack):
    """The runbook's way back on the VPS side: without SEATWATCH_SITE_SOURCE Caddy serves the backend only and
    the site's PM2 is stopped and disabled; with it again the same build serves, neither rebuilt nor re-gated."""
    h = stack.host
    res = stack.deploy(extra_env={"SEATWATCH_SITE_SOURCE": ""})
    assert res.returncode == 0, res.tail(60)
    assert stack.https("/") == (404, "Not found")  # Caddy's own: no site, no upstream
    assert stack.https("/api/monitoring/health")[0] == 200
    assert h.ssh(f"systemctl is-active pm2-{SITE_USER}", check=False).stdout.strip() != "active"
    assert h.ssh(f"systemctl is-enabled pm2-{SITE_USER}", check=False).stdout.strip() == "disabled"
    res = stack.deploy()
    assert res.returncode == 0, res.tail(60)
    assert "building the site" not in res.output and "Activate site release" not in res.output
    deadline = time.monotonic() + 30 * stack.host.slowdown
    while stack.https("/")[0] != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert_site_serves(stack)
    assert stack.planned_changes() == []


def test_stack_comes_back_after_a_reboot(stack):
    seconds = stack.host.reboot()
    t0 = time.monotonic()
    core.assert_stack_runs(stack)
    TIMINGS["reboot to healthy"] = seconds + (time.monotonic() - t0)
    report(f"host rebooted; stack healthy again {TIMINGS['reboot to healthy']:.1f}s after poweroff")
    assert stack.host.ssh("systemctl is-active redis-server caddy").stdout.split() == ["active", "active"]
    if SITE:
        deadline = time.monotonic() + 60 * stack.host.slowdown
        while stack.https("/")[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert_site_serves(stack)
        assert stack.host.ssh(f"systemctl is-enabled pm2-{SITE_USER}").stdout.strip() == "enabled"
