"""The deploy, end to end, against a real booted Debian host (tests/testhost.py). Needs root.

One host for the module, in order: a fresh deploy; what it set up; a second deploy changes
nothing; a cron trigger through Caddy ends in an email at the stand-in Resend; the stack comes
back after a reboot; a release that never gets healthy is rolled back. It never skips: if the
host cannot be built the fixture errors.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from urllib.parse import unquote, urlsplit

import pytest

from tests.deploystack import DOMAIN, Reporter, freshly_deployed
from tests.testhost import NATIVE_ARCH, TestHost, unique_name

pytestmark = pytest.mark.deploy

APP_USER = "seatwatch"
RUN = "/usr/local/lib/seatwatch/run"
ORACLE = TestHost("probe").arch == NATIVE_ARCH
TIMINGS: dict[str, float] = {}


report = Reporter("deploy test")


@pytest.fixture(scope="module")
def stack(pytestconfig):
    report.config = pytestconfig
    # The host starts like an Oracle Cloud image: an iptables REJECT-all but SSH in rules.v4.
    # (Not under qemu emulation, SEATWATCH_TEST_ARCH=arm64: qemu-user cannot speak nf_tables netlink.)
    with freshly_deployed(report, TIMINGS, "test host", name=unique_name("swt"),
                          oracle_firewall=ORACLE) as s:
        s.first_release = s.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
        yield s


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
    # above the consumer's own bound (app.queue.worker.shutdown_timeout of the deployed settings); systemd waits
    # longer still for the pm2 unit at a reboot (its default 90 s would kill a worker mid-check)
    from app.settings import Settings
    from app.queue.worker import shutdown_timeout

    consumer_s = shutdown_timeout(Settings.from_env(stack.env()))
    assert worker["kill_timeout"] > consumer_s * 1000
    unit = stack.host.ssh(f"systemctl cat pm2-{APP_USER}").stdout
    assert "PM2_KILL_SIGNAL" not in unit
    stop_s = int(stack.host.ssh(f"systemctl cat pm2-{APP_USER} | sed -n 's/^TimeoutStopSec=//p' | tail -n1")
                 .stdout.strip())
    assert stack.host.ssh(f"systemctl show -p TimeoutStopUSec --value pm2-{APP_USER}").stdout.strip() != "1min 30s"
    assert stop_s * 1000 > worker["kill_timeout"] + procs["web"]["pm2_env"]["kill_timeout"], stop_s
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
    # no answer names the server: the HTTPS site, its 404, the port-80 redirect
    for path, port in (("/api/monitoring/health", 443), ("/somewhere/else", 443), ("/api/cron", 80)):
        head = stack.head(path, port=port)
        assert head and "server:" not in head.lower() and "via:" not in head.lower(), head
    assert stack.host.ssh("systemctl is-enabled caddy-api || true").stdout.strip() != "enabled"
    assert stack.host.ssh("systemctl is-active caddy-api || true").stdout.strip() != "active"
    # waitress itself is not reachable from outside
    assert stack.host.ssh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/api/monitoring/health",
                          check=False).stdout in ("200", "503")
    reach = stack.host.ssh(f"curl -s --max-time 3 http://{stack.host.address}:8080/ || echo refused",
                           check=False).stdout
    assert "refused" in reach


def test_a_50_mb_upload_through_caddy_gets_413_at_once_and_nothing_is_spooled(stack, tmp_path):
    body = tmp_path / "50mb"
    with open(body, "wb") as fh:
        fh.truncate(50 * 2**20)
    h = stack.host
    pids = " ".join([str(pm2_processes(stack)["web"]["pid"]), h.ssh("pidof caddy").stdout.strip()])
    spool_dirs = "/tmp /var/tmp /var/lib/caddy"
    usage = f"sudo du -sb {spool_dirs} | awk '{{s += $1}} END {{print s}}'"
    open_spool = (f"for p in {pids}; do sudo ls -l /proc/$p/fd; done | "
                  f"grep -E ' -> /(tmp|var/tmp|var/lib/caddy)/' || true")
    before = int(h.ssh(usage).stdout)
    code, seconds, sent, head = stack.upload("/api/cron", body)
    report(f"50 MB upload through Caddy: HTTP {code} after {seconds:.3f}s, {sent} bytes sent before the close")
    assert code == 413 and seconds < 1.0, (code, seconds)
    assert sent < 10 * 2**20 and "server:" not in head.lower(), (sent, head)
    chunked = stack.upload("/api/cron", body, chunked=True)  # no length: Caddy stops reading at its limit
    report(f"50 MB chunked upload through Caddy: HTTP {chunked[0]} after {chunked[1]:.3f}s, {chunked[2]} bytes sent")
    assert chunked[0] == 413 and chunked[2] < 10 * 2**20, chunked[:3]
    assert h.ssh(open_spool).stdout.strip() == ""
    assert abs(int(h.ssh(usage).stdout) - before) < 2**20  # nothing spooled (logs aside)
    code, _ = stack.https("/api/monitoring/health")
    assert code == 200


def test_firewall_opens_ssh_and_web_only_on_ipv4_and_ipv6_and_persists_it(stack):
    """One promise whether or not the image came with Oracle's rules.v4 (this host: ORACLE)."""
    import socket

    from roles.firewall import JUMP

    h = stack.host
    if h.arch != NATIVE_ARCH:  # emulated (qemu-user has no nf_tables): the deploy runs with the firewall off
        assert h.ssh("sudo iptables -S SEATWATCH", check=False).returncode != 0
        return
    for tool in ("iptables", "ip6tables"):
        assert h.ssh(f"sudo {tool} -S INPUT 1").stdout.strip() == JUMP, tool
        chain = h.ssh(f"sudo {tool} -S SEATWATCH").stdout.splitlines()
        assert chain[-1].startswith("-A SEATWATCH -j REJECT"), chain
    for saved in ("/etc/iptables/rules.v4", "/etc/iptables/rules.v6"):
        assert "-j SEATWATCH" in h.ssh(f"sudo cat {saved}").stdout, saved
    if ORACLE:  # the image's own rules are kept behind the jump (never flushed)
        rules = h.ssh("sudo iptables -S INPUT").stdout
        assert "--dport 22 " in rules and "icmp-host-prohibited" in rules, rules
    # from this machine, over IPv4 and IPv6: 443 answers, a port something listens on does not
    h.ssh("sudo systemd-run --quiet --unit=swprobe python3 -m http.server 8999 --bind ::")
    try:
        deadline = time.monotonic() + 20
        while h.ssh("curl -s -o /dev/null http://127.0.0.1:8999/", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the probe listener did not start"
            time.sleep(0.3)
        assert h.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' http://[{h.address6}]:8999/").stdout == "200"
        for address in (h.address, h.address6):
            socket.create_connection((address, 443), timeout=5).close()
            with pytest.raises(OSError):
                socket.create_connection((address, 8999), timeout=3).close()
            with pytest.raises(OSError):
                socket.create_connection((address, 8080), timeout=3).close()
    finally:
        h.ssh("sudo systemctl stop swprobe", check=False)


def test_redis_is_bound_to_localhost_and_needs_the_password(stack):
    h = stack.host
    assert "NOAUTH" in h.ssh("redis-cli -h 127.0.0.1 ping", check=False).stdout
    wrong = h.ssh("REDISCLI_AUTH=wrong redis-cli --no-auth-warning -h 127.0.0.1 ping", check=False)
    assert "PONG" not in wrong.stdout
    auth = f"REDISCLI_AUTH='{stack.redis_password}'"
    assert h.ssh(f"{auth} redis-cli -h 127.0.0.1 ping").stdout.strip() == "PONG"
    conf = h.ssh("sudo cat /etc/redis/redis.conf").stdout
    assert "\nbind 127.0.0.1" in conf and "maxmemory-policy noeviction" in conf
    assert re.search(r"^maxmemory \S+", conf, re.M)
    # the app's own URL (the env file's REDIS_URL) runs no administrative command (issue 27)
    # (decoded here: redis-cli does not percent-decode a URL's password)
    url = urlsplit(h.ssh("sudo sed -n 's/^REDIS_URL=//p' /etc/seatwatch/app.env").stdout.strip())
    app_auth = f"REDISCLI_AUTH={shlex.quote(unquote(url.password or ''))}"
    cli = f"{app_auth} redis-cli --no-auth-warning -h {url.hostname} -p {url.port or 6379}"
    for command in ("config set dir /tmp", "config get maxmemory", "module load /tmp/x.so",
                    "debug sleep 0", "bgsave", "replicaof no one", "acl list", "flushall"):
        refused = h.ssh(f"{cli} {command}", check=False)
        said = refused.stdout + refused.stderr  # MODULE on 7.0+: "not allowed" before the ACL
        assert "NOPERM" in said or "not allowed" in said, (command, said)
    assert h.ssh(f"{cli} ping").stdout.strip() == "PONG"
    # from this machine (another host on the network) the port is closed, on IPv4 and IPv6
    import socket
    for address in (h.address, h.address6):
        with pytest.raises(OSError):
            socket.create_connection((address, 6379), timeout=3).close()
    assert h.ssh("systemctl is-enabled redis-server").stdout.strip() == "enabled"


def test_env_file_is_roots_and_only_readable_by_the_app_user(stack):
    env_file = "/etc/seatwatch/app.env"
    out = stack.host.ssh(f"sudo stat -c '%a %U %G' {env_file}").stdout.split()
    assert out == ["640", "root", APP_USER]
    assert stack.host.ssh(f"cat {env_file}", check=False).returncode != 0  # another user
    env = stack.host.ssh(f"sudo -u {APP_USER} cat {env_file}").stdout  # the app user reads it ...
    assert f"CRON_SECRET={stack.cron_secret}" in env
    # ... and cannot change it
    assert stack.host.ssh(f"sudo -u {APP_USER} sh -c 'echo X=1 >> {env_file}'", check=False).returncode != 0
    # the secrets live only there: not in the ecosystem file nor in PM2's saved process list
    for path in ("/usr/local/lib/seatwatch/ecosystem.config.js", f"/home/{APP_USER}/.pm2/dump.pm2"):
        assert stack.cron_secret not in stack.host.ssh(f"sudo cat {path}").stdout, path


def test_second_deploy_changes_nothing(stack):
    assert stack.planned_changes() == []
    res = stack.deploy()
    TIMINGS["no-change deploy"] = res.seconds
    report(f"no-change deploy took {res.seconds:.1f}s")
    assert res.returncode == 0, res.tail()
    assert res.changed_ops == 0, res.tail(80)
    assert stack.planned_changes() == []


def test_diff_never_prints_a_secret(stack):
    """A changed secret: the plan shows the env file and the Redis config would change, never a value."""
    new_cron, new_redis = "cron-NEW-" + "z" * 20, "redis-NEW-" + "y" * 20
    res = stack.deploy(dry=True, args=("--diff",), extra_env={"CRON_SECRET": new_cron, "REDIS_PASSWORD": new_redis})
    assert res.returncode == 0, res.tail(40)
    assert "Write the env file" in res.output and "Configure Redis" in res.output, res.tail(60)
    for secret in (new_cron, new_redis, stack.cron_secret, stack.redis_password):
        assert secret not in res.output


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
    stack.forget_cron_slots()  # the scheduler may have run this hour's slot already
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
    # the firewall rules came back with the host (netfilter-persistent)
    from roles.firewall import JUMP
    for tool in ("iptables", "ip6tables") if stack.host.arch == NATIVE_ARCH else ():
        assert stack.host.ssh(f"sudo {tool} -S INPUT 1").stdout.strip() == JUMP, tool


def test_unhealthy_release_rolls_back(stack):
    before = stack.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
    res = stack.deploy(project=stack.broken_copy())
    TIMINGS["failed deploy with rollback"] = res.seconds
    assert res.returncode != 0, "a release that cannot become healthy must fail the deploy"
    assert "did not pass the gate" in res.output and "ROLLED BACK" in res.output, res.tail(80)
    assert "deliberately broken release" in res.output  # the reason, from the web log
    after = stack.host.ssh("readlink /opt/seatwatch/current").stdout.strip()
    assert after == before
    assert_stack_runs(stack)  # the old release serves again
    # and the good project deploys cleanly over it with nothing to change
    assert stack.planned_changes() == []


# --------------------------------------------------------------------------- defects of issue 9

def current(stack) -> str:
    return stack.host.ssh("readlink /opt/seatwatch/current").stdout.strip()


def marker(stack) -> str:
    return stack.host.ssh("cat /var/lib/seatwatch/active", check=False).stdout.strip()


def worker_release(stack) -> str | None:
    """The release named in the heartbeat of the process PM2 runs as `worker`."""
    pid = pm2_processes(stack)["worker"]["pid"]
    out = stack.host.ssh(f"sudo -u {APP_USER} {RUN} heartbeat").stdout
    beats = json.loads(out[out.index("{"):])["beats"]
    return next((b["release"] for b in beats if b["pid"] == pid), None)


def wait_activation_done(stack, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    from roles.pm2 import activation_running

    while stack.host.ssh(activation_running(), check=False).returncode == 0:
        assert time.monotonic() < deadline, "the activation unit is still running"
        time.sleep(1)


def kill_deploy_after_switch(stack, project, old: str) -> str:
    """Start a deploy of `project`, kill pyinfra (the whole process group) as soon as `current` moved."""
    import os
    import signal

    new = f"/opt/seatwatch/releases/{stack.release_id(project)}"
    assert new != old
    proc = stack.start_deploy(project)
    try:
        deadline = time.monotonic() + 600
        while current(stack) == old:
            assert proc.poll() is None, "the deploy ended before it switched"
            assert time.monotonic() < deadline, "the deploy never switched current"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert current(stack) == new
    return new


def test_broken_caddyfile_setting_fails_and_leaves_the_old_file_live(stack):
    before = stack.host.ssh("sha256sum /etc/caddy/Caddyfile").stdout.split()[0]
    res = stack.deploy(extra_env={"SEATWATCH_ACME_EMAIL": "ops@example.com extra-word"})
    assert res.returncode != 0, res.tail(40)
    assert "Caddyfile candidate is invalid" in res.output, res.tail(40)
    assert stack.host.ssh("sha256sum /etc/caddy/Caddyfile").stdout.split()[0] == before
    assert stack.host.ssh("systemctl is-active caddy").stdout.strip() == "active"
    code, _ = stack.https("/api/monitoring/health")
    assert code == 200
    # the rerun with the bad setting still fails (it does not report "nothing to do") ...
    assert stack.deploy(extra_env={"SEATWATCH_ACME_EMAIL": "ops@example.com extra-word"}).returncode != 0
    # ... and the good settings have nothing to change
    assert stack.planned_changes() == []


def _cutover_check(stack, *extra: str):
    import subprocess

    cmd = [sys.executable, "-m", "app", "cutover-check", "--host", stack.host.address, "--domain", DOMAIN,
           "--ssh-user", "admin", "--ssh-key", str(stack.host.key), "--known-hosts", str(stack.host.known_hosts),
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_cutover_check_against_the_host(stack, tmp_path):
    # Caddy's local CA is not trusted here: the tls check fails and says why; the service checks pass
    cp = _cutover_check(stack)
    assert cp.returncode != 0, cp.stdout
    tls = next(l for l in cp.stdout.splitlines() if l.split()[1:2] == ["tls"])
    assert tls.startswith("FAIL") and "certificate" in tls, cp.stdout
    for name in ("health", "database", "redis", "breaker", "heartbeat", "cron-auth", "worker"):
        assert any(l.startswith("PASS") and l.split()[1] == name for l in cp.stdout.splitlines()), (name, cp.stdout)
    # with the test CA trusted, everything passes and the next step is printed
    ca = tmp_path / "caddy-local-root.crt"
    ca.write_text(stack.host.ssh(
        "sudo cat /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt").stdout)
    cp = _cutover_check(stack, "--ca-file", str(ca))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Next: runbook step" in cp.stdout
    # a stopped worker fails, naming the check
    pm2 = f"sudo -u {APP_USER} -H env PM2_HOME=/home/{APP_USER}/.pm2 pm2"
    stack.host.ssh(f"{pm2} stop worker")
    try:
        cp = _cutover_check(stack, "--ca-file", str(ca))
        assert cp.returncode != 0
        assert any(l.startswith("FAIL") and l.split()[1] == "worker" for l in cp.stdout.splitlines()), cp.stdout
        assert "FAILED: worker" in cp.stdout
    finally:
        stack.host.ssh(f"{pm2} start worker")
    assert_stack_runs(stack)


def _ops(stack, *args: str):
    import subprocess

    return subprocess.run([sys.executable, str(stack.project / "scripts" / "ops.py"), *args], cwd=stack.project,
                          env=stack.env(), capture_output=True, text=True, timeout=900)


def test_deploy_lock_audit_releases_and_run(stack):
    held = "alice@example.com since 2026-01-01T00:00:00Z (pid 1 on alices-laptop, release x)"
    stack.host.ssh(f"sudo mkdir -p /var/lib/seatwatch && echo '{held}' | sudo tee /var/lib/seatwatch/deploy.lock")
    cp = _ops(stack, "deploy")
    assert cp.returncode != 0 and held in cp.stderr, cp.stdout + cp.stderr
    cp = _ops(stack, "deploy", "--break-lock")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    assert stack.host.ssh("sudo test -e /var/lib/seatwatch/deploy.lock", check=False).returncode != 0
    audit = stack.host.ssh("sudo cat /var/log/seatwatch/deploys.log").stdout.splitlines()
    release_id = current(stack).rsplit("/", 1)[1]
    assert "deploy operator=" in audit[-1] and f"release={release_id} result=ok" in audit[-1], audit
    cp = _ops(stack, "releases")
    line = next(l for l in cp.stdout.splitlines() if l.startswith(release_id))
    assert "current" in line and "active" in line, cp.stdout
    cp = _ops(stack, "run", "heartbeat")
    assert cp.returncode == 0 and json.loads(cp.stdout)["beats"][0]["release"] == release_id, cp.stdout


def test_one_look_status_audit_env_and_a_log_window(stack):
    """make status, audit, env, logs SINCE=...: what runs and whether it is OK, from the laptop."""
    import re

    cp = _ops(stack, "status")
    release_id = current(stack).rsplit("/", 1)[1]
    assert cp.stdout.startswith(f"release  {release_id}"), cp.stdout + cp.stderr
    for name in ("web", "worker"):
        assert re.search(rf"^  {name}\s+online\s+up ", cp.stdout, re.M), cp.stdout
    assert "schedule: " in cp.stdout and "heartbeats" in cp.stdout
    assert f"release={release_id}" in cp.stdout.split("last deploys", 1)[1], cp.stdout
    healthy = "status healthy" in cp.stdout
    assert cp.returncode == (0 if healthy else 1), cp.stdout
    cp = _ops(stack, "audit", "3")
    assert cp.returncode == 0 and f"release={release_id}" in cp.stdout.splitlines()[-1], cp.stdout
    cp = _ops(stack, "env")
    assert cp.returncode == 0, cp.stderr
    cron = next(l for l in cp.stdout.splitlines() if l.split()[0] == "CRON_SECRET")
    assert "***" in cron and "[same as the laptop]" in cron and stack.cron_secret not in cp.stdout
    assert "[server only (set by the deploy)]" in next(
        l for l in cp.stdout.splitlines() if l.split()[0] == "SEATWATCH_INSTANCE")
    cp = _ops(stack, "logs", "50", "--since", "1h")
    assert cp.returncode == 0 and re.search(r"^worker-\w+ \| \d{4}-", cp.stdout, re.M), cp.stdout[-2000:]


def test_scheduler_off_starts_the_worker_without_the_scheduler(stack):
    """Zero overlap at the cutover: SEATWATCH_SCHEDULER=off, then on again, each a gated reload."""
    res = stack.deploy(extra_env={"SEATWATCH_SCHEDULER": "off"})
    assert res.returncode == 0, res.tail(60)
    pid = pm2_processes(stack)["worker"]["pid"]
    assert "--no-scheduler" in stack.host.ssh(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    out = stack.host.ssh(f"sudo -u {APP_USER} {RUN} heartbeat").stdout
    beat = next(b for b in json.loads(out[out.index("{"):])["beats"] if b["pid"] == pid)
    assert beat["scheduler"] is False
    res = stack.deploy()  # the setting back on: the scheduler is back
    assert res.returncode == 0, res.tail(60)
    pid = pm2_processes(stack)["worker"]["pid"]
    assert "--no-scheduler" not in stack.host.ssh(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert stack.planned_changes() == []


def test_crash_looping_worker_fails_the_gate_and_is_rolled_back(stack):
    before = current(stack)
    res = stack.deploy(project=stack.crashing_worker_copy())
    TIMINGS["crash-looping worker, rolled back"] = res.seconds
    assert res.returncode != 0, res.tail(60)
    assert "did not pass the gate" in res.output and "ROLLED BACK" in res.output, res.tail(60)
    assert "worker" in res.output.split("did not pass the gate", 1)[1].splitlines()[0], res.tail(60)
    assert current(stack) == before and marker(stack).split()[0] == before
    assert_stack_runs(stack)
    assert worker_release(stack) == before.rsplit("/", 1)[1]
    assert stack.planned_changes() == []


def test_broken_release_interrupted_after_the_switch_ends_rolled_back(stack):
    before = current(stack)
    kill_deploy_after_switch(stack, stack.broken_copy(), before)
    wait_activation_done(stack)  # the server finishes without the laptop: gate fails, rolls back
    assert current(stack) == before and marker(stack).split()[0] == before
    assert_stack_runs(stack)
    assert worker_release(stack) == before.rsplit("/", 1)[1]
    log = stack.host.ssh("sudo cat /var/log/seatwatch/activate.log").stdout
    assert "ROLLED BACK" in log, log
    assert stack.planned_changes() == []


def test_deploy_interrupted_after_the_switch_is_finished_by_the_rerun(stack):
    before = current(stack)
    project = stack.changed_copy("interrupted")
    new = kill_deploy_after_switch(stack, project, before)
    res = stack.deploy(project=project)
    TIMINGS["rerun after an interrupted deploy"] = res.seconds
    assert res.returncode == 0, res.tail(60)
    assert current(stack) == new and marker(stack).split()[0] == new
    assert_stack_runs(stack)
    assert worker_release(stack) == new.rsplit("/", 1)[1]  # PM2 runs the new code, gated
    audit = stack.host.ssh("sudo cat /var/log/seatwatch/deploys.log").stdout
    assert f"release={new.rsplit('/', 1)[1]} result=gated" in audit, audit
    assert stack.planned_changes(project) == []


def test_rollback_command_goes_back_to_the_previous_gated_release(stack):
    before = current(stack)
    cp = _ops(stack, "rollback")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    after = current(stack)
    assert after != before and after == stack.first_release, (before, after, cp.stdout)
    assert marker(stack).split()[0] == after
    assert worker_release(stack) == after.rsplit("/", 1)[1]
    assert stack.planned_changes() == []  # the first release's project has nothing to change


# --------------------------------------------------------------------------- issue 18: root trusts nothing of the app user's

ROOTS_FILES = ["/usr/local/lib/seatwatch/activate", "/usr/local/lib/seatwatch/activation.py",
               "/usr/local/lib/seatwatch/activate.json", "/usr/local/lib/seatwatch/run",
               "/usr/local/lib/seatwatch/ecosystem.config.js", "/etc/seatwatch/app.env"]
CANARIES = ["/etc/sw-canary", "/root/sw-canary", f"/etc/systemd/system/pm2-{APP_USER}.service.d/sw-canary.conf"]
# where the app user may own new files: its releases, its home, the temporary directories
APP_PLACES = ("/opt/seatwatch/releases/", f"/home/{APP_USER}/", "/tmp/", "/var/tmp/", "/dev/shm/")


def _fingerprint(stack) -> str:
    files = " ".join(ROOTS_FILES + CANARIES)
    return stack.host.ssh(f"sudo stat -c '%n %U:%G %a %s' {files} && sudo sha256sum {files}").stdout


def _owned_by_app(stack) -> set[str]:
    out = stack.host.ssh(f"sudo find / -xdev -user {APP_USER} 2>/dev/null || true").stdout
    return set(out.split("\n")) - {""}


def test_the_app_user_cannot_make_root_write_or_run_what_it_controls(stack):
    h = stack.host
    as_app = f"sudo -u {APP_USER} sh -c"
    for canary in CANARIES:
        h.ssh(f"echo 'root only' | sudo tee {canary} >/dev/null && sudo chmod 600 {canary}")
    try:
        before, owned_before = _fingerprint(stack), _owned_by_app(stack)
        # what root runs and the places it writes: the app user can change none of them
        for attempt in ("echo evil > /usr/local/lib/seatwatch/activate", "ln -sf /bin/sh /usr/local/lib/seatwatch/run",
                        "echo 'import os' >> /usr/local/lib/seatwatch/activation.py",
                        "echo '{}' > /usr/local/lib/seatwatch/activate.json",
                        "mv /usr/local/lib/seatwatch /usr/local/lib/sw-moved", "echo X=1 >> /etc/seatwatch/app.env",
                        "ln -s /etc/sw-canary /opt/seatwatch/current.new", "mkdir /opt/seatwatch/shared",
                        "mkdir /opt/seatwatch/bin", "ln -s /etc/sw-canary /var/lib/seatwatch/active.new",
                        "ln -s /etc/sw-canary /var/lib/seatwatch/gated/x",
                        "ln -s /etc/sw-canary /var/log/seatwatch/activate.log",
                        "mv /opt/seatwatch/releases /opt/seatwatch/r"):
            cp = h.ssh(f"{as_app} {shlex.quote(attempt)}", check=False)
            assert cp.returncode != 0, f"the app user could: {attempt}"
        # links planted where the app user can: in its releases (the old .gated, the next release's directory)
        project = stack.changed_copy("attack")
        nxt = f"/opt/seatwatch/releases/{stack.release_id(project)}"
        cur = current(stack)
        for link, target in ((f"{cur}/.gated", "/etc/sw-canary"), (nxt, "/root"),
                             (f"{cur}/.complete.new", "/etc/sw-canary")):
            h.ssh(f"{as_app} {shlex.quote(f'rm -f {link}; ln -s {target} {link}')}")
        res = stack.deploy(project=project)
        assert res.returncode == 0, res.tail(60)
        assert current(stack) == nxt and h.ssh(f"stat -c %F {nxt}").stdout.strip() == "directory"
        cp = _ops(stack, "rollback")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert current(stack) != nxt
        assert_stack_runs(stack)
        # root's files and the canaries unchanged; the link and marker are root's
        assert _fingerprint(stack) == before
        assert h.ssh("stat -c %U /opt/seatwatch/current /var/lib/seatwatch/active").stdout.split() == ["root"] * 2
        new = sorted(p for p in _owned_by_app(stack) - owned_before if not p.startswith(APP_PLACES))
        assert new == [], new
    finally:
        h.ssh("sudo rm -f " + " ".join(CANARIES), check=False)
