"""The deploy, end to end, against a real booted Debian host (tests/testhost.py). Needs root.

One host for the module, in order: a fresh deploy; what it set up; a second deploy changes
nothing; a cron trigger through Caddy ends in an email at the stand-in Resend; the stack comes
back after a reboot; a release that never gets healthy is rolled back. It never skips: if the
host cannot be built the fixture errors.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.deploystack import DOMAIN, DeployStack
from tests.testhost import NATIVE_ARCH, TestHost

pytestmark = pytest.mark.deploy

APP_USER = "seatwatch"
ORACLE = TestHost("probe").arch == NATIVE_ARCH
TIMINGS: dict[str, float] = {}


_config = None


def report(msg: str) -> None:
    """Print past pytest's capture: the timings are part of what this test shows."""
    line = f"[deploy test] {msg}"
    if _config is None:
        print(line, file=sys.__stderr__, flush=True)
        return
    capture = _config.pluginmanager.getplugin("capturemanager")
    terminal = _config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        terminal.write_line(line)


@pytest.fixture(scope="module")
def stack(pytestconfig):
    global _config
    _config = pytestconfig
    t0 = time.monotonic()
    # The host starts like an Oracle Cloud image: an iptables REJECT-all but SSH in rules.v4.
    # (Not under qemu emulation, SEATWATCH_TEST_ARCH=arm64: qemu-user cannot speak nf_tables netlink.)
    with DeployStack(oracle_firewall=ORACLE) as s:
        TIMINGS["host up"] = time.monotonic() - t0
        res = s.deploy()
        TIMINGS["fresh deploy"] = res.seconds
        report(f"test host up in {TIMINGS['host up']:.1f}s; fresh deploy took {res.seconds:.1f}s")
        assert res.returncode == 0, f"fresh deploy failed:\n{res.tail(120)}"
        s.first_release = s.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
        yield s
        report("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))


def pm2_processes(stack) -> dict[str, dict]:
    out = stack.host.ssh(f"sudo -u {APP_USER} -H env PM2_HOME=/home/{APP_USER}/.pm2 pm2 jlist").stdout
    procs = json.loads(out[out.index("["):])
    return {p["name"]: p for p in procs}


def assert_stack_runs(stack) -> None:
    code, body = stack.wait_healthy()
    assert code == 200, body
    assert json.loads(body)["status"] == "healthy"
    procs = pm2_processes(stack)
    assert set(procs) == {"web", "worker"}, procs.keys()
    for name, proc in procs.items():
        assert proc["pm2_env"]["status"] == "online", (name, proc["pm2_env"]["status"])
        user = stack.host.ssh(f"ps -o user= -p {proc['pid']}").stdout.strip()
        assert user == APP_USER, (name, user)


def test_pm2_runs_web_and_worker_as_the_app_user(stack):
    assert_stack_runs(stack)
    procs = pm2_processes(stack)
    worker = procs["worker"]["pm2_env"]
    # PM2 stops with SIGINT (its KILL_SIGNAL default; huey's graceful stop) and waits kill_timeout,
    # which must exceed the blocking read (60 s) plus the longest check (scraper 30 s + email retries)
    assert worker["kill_timeout"] >= 150_000
    unit = stack.host.ssh(f"systemctl cat pm2-{APP_USER}").stdout
    assert "PM2_KILL_SIGNAL" not in unit
    # the consumer itself: 4 thread workers under the app user
    cmdline = stack.host.ssh(f"tr '\\0' ' ' < /proc/{procs['worker']['pid']}/cmdline").stdout
    assert "worker" in cmdline or "huey" in cmdline, cmdline
    assert stack.host.ssh(f"systemctl is-enabled pm2-{APP_USER}").stdout.strip() == "enabled"


def test_caddy_answers_on_80_and_443_and_proxies_the_service(stack):
    code, _ = stack.https("/api/monitoring/health", port=80)
    assert code in (301, 308), f"port 80 should redirect to HTTPS, got {code}"
    code, body = stack.https("/api/monitoring/health")
    assert code == 200 and json.loads(body)["checks"]["redis"]["status"] == "healthy", body
    code, _ = stack.https("/api/cron")  # proxied to the app, which wants the token
    assert code == 401
    code, _ = stack.https("/somewhere/else")  # not the service's: no upstream configured
    assert code == 404
    assert stack.host.ssh("systemctl is-enabled caddy-api || true").stdout.strip() != "enabled"
    assert stack.host.ssh("systemctl is-active caddy-api || true").stdout.strip() != "active"
    # waitress itself is not reachable from outside
    assert stack.host.ssh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/api/monitoring/health",
                          check=False).stdout in ("200", "503")
    reach = stack.host.ssh(f"curl -s --max-time 3 http://{stack.host.address}:8080/ || echo refused",
                           check=False).stdout
    assert "refused" in reach


def test_firewall_opens_web_ports_before_the_reject_and_persists_them(stack):
    if not ORACLE:  # a host without Oracle's rules.v4: the role leaves its firewall alone
        assert stack.host.ssh("test -e /etc/iptables/rules.v4", check=False).returncode != 0
        assert stack.host.ssh("dpkg -s iptables-persistent", check=False).returncode != 0
        return
    rules = stack.host.ssh("sudo iptables -S INPUT").stdout.splitlines()
    reject = next(i for i, r in enumerate(rules) if "-j REJECT" in r)
    for proto, port in (("tcp", 80), ("tcp", 443), ("udp", 443)):
        pos = next(i for i, r in enumerate(rules) if f"-p {proto}" in r and f"--dport {port} " in r + " "
                   and "ACCEPT" in r)
        assert pos < reject, rules
    assert any("--dport 22 " in r + " " for r in rules), "the image's own rules are kept (no flush)"
    saved = stack.host.ssh("sudo cat /etc/iptables/rules.v4").stdout
    assert "--dport 443" in saved and "REJECT" in saved and "--dport 22" in saved
    # 8080 stays closed from outside, by the REJECT and by waitress binding 127.0.0.1
    import socket
    with pytest.raises(OSError):
        socket.create_connection((stack.host.address, 8080), timeout=3).close()


def test_redis_is_bound_to_localhost_and_needs_the_password(stack):
    h = stack.host
    assert "NOAUTH" in h.ssh("redis-cli -h 127.0.0.1 ping", check=False).stdout
    wrong = h.ssh("REDISCLI_AUTH=wrong redis-cli --no-auth-warning -h 127.0.0.1 ping", check=False)
    assert "PONG" not in wrong.stdout
    auth = f"REDISCLI_AUTH='{stack.redis_password}'"
    assert h.ssh(f"{auth} redis-cli -h 127.0.0.1 ping").stdout.strip() == "PONG"
    assert "127.0.0.1" in h.ssh(f"{auth} redis-cli -h 127.0.0.1 config get bind").stdout
    assert "noeviction" in h.ssh(f"{auth} redis-cli -h 127.0.0.1 config get maxmemory-policy").stdout
    maxmem = h.ssh(f"{auth} redis-cli -h 127.0.0.1 config get maxmemory").stdout.split()[-1]
    assert int(maxmem) > 0
    # from this machine (another host on the network) the port is closed
    import socket
    with pytest.raises(OSError):
        socket.create_connection((h.address, 6379), timeout=3).close()
    assert h.ssh("systemctl is-enabled redis-server").stdout.strip() == "enabled"


def test_env_file_is_0600_and_owned_by_the_app_user(stack):
    out = stack.host.ssh("sudo stat -c '%a %U' /opt/seatwatch/shared/app.env").stdout.split()
    assert out == ["600", APP_USER]
    assert stack.host.ssh("cat /opt/seatwatch/shared/app.env", check=False).returncode != 0
    env = stack.host.ssh("sudo cat /opt/seatwatch/shared/app.env").stdout
    assert f"CRON_SECRET={stack.cron_secret}" in env
    # the secrets live only there: not in the ecosystem file nor in PM2's saved process list
    for path in ("/opt/seatwatch/ecosystem.config.js", f"/home/{APP_USER}/.pm2/dump.pm2"):
        assert stack.cron_secret not in stack.host.ssh(f"sudo cat {path}").stdout, path


def test_second_deploy_changes_nothing(stack):
    assert stack.planned_changes() == []
    res = stack.deploy()
    TIMINGS["no-change deploy"] = res.seconds
    report(f"no-change deploy took {res.seconds:.1f}s")
    assert res.returncode == 0, res.tail()
    assert res.changed_ops == 0, res.tail(80)
    assert stack.planned_changes() == []


def test_cron_through_caddy_checks_and_emails(stack):
    term, nbr, email = "2261", "12430", "watcher@asu.edu"
    user_id = stack.sql("insert into auth.users (email) values (%s) returning id", (email,))[0][0]
    stack.sql("insert into public.class_watches (user_id, term, subject, catalog_nbr, class_nbr) "
              "values (%s, %s, 'CSE', '110', %s)", (user_id, term, nbr))
    # the stored state says full; the scraper now says 3 seats: a seat became available
    stack.sql("insert into public.class_states (term, subject, catalog_nbr, class_nbr, title, instructor_name, "
              "seats_available, seats_capacity) values (%s, 'CSE', '110', %s, 'Principles', 'Staff', 0, 100)",
              (term, nbr))
    stack.scraper.set_section(term, nbr, seats_available=3, seats_capacity=100)
    code, body = stack.https("/api/cron?group=even", method="POST",
                             headers={"Authorization": f"Bearer {stack.cron_secret}"})
    assert code == 200, body
    answer = json.loads(body)
    assert answer["success"] is True and answer["stagger_group"] == "even", answer
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stack.resend.to(email):
        time.sleep(0.5)
    sent = stack.resend.to(email)
    assert len(sent) == 1, f"no email accepted by the stand-in Resend; scraper calls {stack.scraper.calls}"
    assert sent[0]["subject"] == "🎉 Seat Available: CSE 110 (12430)"
    assert (term, nbr) in stack.scraper.calls or any(nbr in str(c) for c in stack.scraper.calls)


def test_stack_comes_back_after_a_reboot(stack):
    seconds = stack.host.reboot()
    t0 = time.monotonic()
    assert_stack_runs(stack)
    TIMINGS["reboot to healthy"] = seconds + (time.monotonic() - t0)
    report(f"host rebooted; stack healthy again {TIMINGS['reboot to healthy']:.1f}s after poweroff")
    assert stack.host.ssh("systemctl is-active redis-server caddy").stdout.split() == ["active", "active"]
    # the firewall rules came back with the host (netfilter-persistent), or Caddy would not answer
    if ORACLE:
        assert "--dport 443" in stack.host.ssh("sudo iptables -S INPUT").stdout


def test_unhealthy_release_rolls_back(stack):
    before = stack.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
    res = stack.deploy(project=stack.broken_copy())
    TIMINGS["failed deploy with rollback"] = res.seconds
    assert res.returncode != 0, "a release that cannot become healthy must fail the deploy"
    assert "did not become healthy" in res.output and "ROLLED BACK" in res.output, res.tail(80)
    assert "deliberately broken release" in res.output  # the reason, from the web log
    after = stack.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
    assert after == before
    assert_stack_runs(stack)  # the old release serves again
    # and the good project deploys cleanly over it with nothing to change
    assert stack.planned_changes() == []
