"""The deploy's core path on a booted Debian 13 "trixie" host, beside Debian 12's (tests/test_deploy.py).

In order, on one host: a fresh deploy, what it met there (Python 3.13, Redis 8 running the rendered
config, Node.js 20 with PM2, Caddy), a second deploy with no change, the gate (a release that never gets
healthy is rolled back), a cron trigger through Caddy ending in an email, a reboot back to healthy.
The same checks as Debian 12's where they apply (called from tests/test_deploy.py); the long fault
scenarios run on Debian 12 only. SEATWATCH_TEST_ARCH=arm64 runs it under qemu (`make test-arm64`);
SEATWATCH_TEST_CORE_SUITE=bookworm runs the same core path on Debian 12, for figures side by side;
SEATWATCH_TEST_HOSTNAME names the host (two runs on one machine).
"""

from __future__ import annotations

import os
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


report = Reporter("deploy test debian13")


@pytest.fixture(scope="module")
def stack(pytestconfig):
    report.config = pytestconfig
    name = os.environ.get("SEATWATCH_TEST_HOSTNAME") or unique_name("swt13")
    arch = os.environ.get("SEATWATCH_TEST_ARCH") or NATIVE_ARCH
    with freshly_deployed(report, TIMINGS, f"{SUITE}/{arch}", name=name, database=f"{TEST_DB}_d13_{name}",
                          suite=SUITE, oracle_firewall=core.ORACLE) as s:
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


def test_second_deploy_changes_nothing(stack):
    assert stack.planned_changes() == []
    res = stack.deploy()
    TIMINGS["no-change deploy"] = res.seconds
    report(f"no-change deploy took {res.seconds:.1f}s")
    assert res.returncode == 0, res.tail()
    assert res.changed_ops == 0, res.tail(80)


def test_gate_rolls_back_a_release_that_never_gets_healthy(stack):
    t0 = time.monotonic()
    core.test_unhealthy_release_rolls_back(stack)
    TIMINGS["gate: failed deploy rolled back"] = time.monotonic() - t0


def test_cron_through_caddy_checks_and_emails(stack):
    core.test_cron_through_caddy_checks_and_emails(stack)


def test_stack_comes_back_after_a_reboot(stack):
    seconds = stack.host.reboot()
    t0 = time.monotonic()
    core.assert_stack_runs(stack)
    TIMINGS["reboot to healthy"] = seconds + (time.monotonic() - t0)
    report(f"host rebooted; stack healthy again {TIMINGS['reboot to healthy']:.1f}s after poweroff")
    assert stack.host.ssh("systemctl is-active redis-server caddy").stdout.split() == ["active", "active"]
