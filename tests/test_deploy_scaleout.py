"""Scale-out, deployed for real: a primary (web, scheduler, Redis) and a worker-only host that shares the
primary's Redis over the worker's private address. Checks spread over both hosts, exactly one scheduler,
both hosts come back after a reboot. Neither host has Oracle's rules.v4: the firewall role alone opens
6379 to the worker's private address only (not its ssh address, nor this machine), on IPv4 and IPv6.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from urllib.parse import quote

import pytest

from tests.deploystack import DeployStack
from tests.test_deploy import report
from tests.testhost import TestHost, unique_name

pytestmark = pytest.mark.deploy
APP_USER = "seatwatch"
PM2 = f"sudo -u {APP_USER} -H env PM2_HOME=/home/{APP_USER}/.pm2 pm2"
RUN = "/usr/local/lib/seatwatch/run"


@pytest.fixture(scope="module")
def pair(pytestconfig, tmp_path_factory):

    report.config = pytestconfig
    with DeployStack(name=unique_name("swp"), oracle_firewall=False) as stack, \
            TestHost(unique_name("sww")) as worker:
        # one ssh key and one known-hosts file for both hosts (the inventory has one of each)
        pub = subprocess.run(["ssh-keygen", "-y", "-f", str(stack.host.key)], capture_output=True, text=True,
                             check=True).stdout
        worker.ssh(f"cat >> /home/admin/.ssh/authorized_keys", input=pub)
        known = tmp_path_factory.mktemp("sw9") / "known_hosts"
        known.write_text(stack.host.known_hosts.read_text() + worker.known_hosts.read_text())
        # worker -> primary without masquerading, so the primary sees the worker's own address
        rule = ["POSTROUTING", "-s", f"10.99.{worker.subnet}.0/24", "-d", f"10.99.{stack.host.subnet}.0/24",
                "-j", "RETURN"]
        subprocess.run(["iptables", "-t", "nat", "-I", *rule[:1], "1", *rule[1:]], check=True)
        # the worker's "private network": a second address it reaches the primary from (not its ssh address)
        private = f"10.98.{worker.subnet}.2"
        for cmd in (f"ip addr add {private}/32 dev {worker.veth_guest}",
                    f"ip route add 10.99.{stack.host.subnet}.0/24 via {worker.gateway} src {private}"):
            subprocess.run(["ip", "netns", "exec", worker.netns, *cmd.split()], check=True)
        subprocess.run(["ip", "route", "add", f"{private}/32", "dev", worker.veth_host], check=True)
        try:
            extra = {
                "SEATWATCH_WORKERS": f"{worker.address}={private}",
                "SEATWATCH_SSH_KNOWN_HOSTS": str(known),
                "SEATWATCH_REDIS": "on",
                "SEATWATCH_REDIS_BIND": f"127.0.0.1 {stack.host.address} {stack.host.address6}",
                "REDIS_URL": f"redis://:{quote(stack.redis_password, safe='')}@{stack.host.address}:6379/0",
            }
            t0 = time.monotonic()
            res = stack.deploy(extra_env=extra)
            report(f"two-host fresh deploy took {res.seconds:.1f}s")
            assert res.returncode == 0, res.tail(120)
            stack.extra, stack.worker, stack.private = extra, worker, private
            stack.t0 = t0
            yield stack
        finally:
            subprocess.run(["iptables", "-t", "nat", "-D", *rule], check=False)
            subprocess.run(["ip", "route", "del", f"{private}/32"], check=False)


def beats(stack) -> list[dict]:
    out = stack.host.ssh(f"sudo -u {APP_USER} {RUN} heartbeat").stdout
    return json.loads(out[out.index("{"):])["beats"]


def test_one_scheduler_and_a_gated_worker_on_each_host(pair):
    release = pair.host.ssh("readlink /opt/seatwatch/current").stdout.strip().rsplit("/", 1)[1]
    by_host = {b["host"]: b for b in beats(pair)}
    assert set(by_host) == {pair.host.name, pair.worker.name}, by_host
    assert by_host[pair.host.name]["scheduler"] is True
    assert by_host[pair.worker.name]["scheduler"] is False  # exactly one scheduler
    assert {b["release"] for b in by_host.values()} == {release}
    procs = json.loads((o := pair.worker.ssh(f"{PM2} jlist").stdout)[o.index("["):])
    assert [p["name"] for p in procs] == ["worker"] and procs[0]["pm2_env"]["status"] == "online"
    assert "--no-scheduler" in pair.worker.ssh(f"tr '\\0' ' ' < /proc/{procs[0]['pid']}/cmdline").stdout
    # the worker-only host was gated too (its marker), and serves nothing
    assert pair.worker.ssh("cat /var/lib/seatwatch/active").stdout.split()[0].endswith(release)
    assert pair.worker.ssh("systemctl is-active caddy redis-server", check=False).stdout.split() != ["active"] * 2


def _connect_from(host, source: str, target: str, port: int) -> str:
    """Whether `host` can open a TCP connection to target:port from its address `source`."""
    script = ("import socket, sys\n"
              "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET); s.settimeout(3)\n"
              "s.bind((sys.argv[1], 0))\n"
              "try:\n    s.connect((sys.argv[2], int(sys.argv[3]))); print('open')\n"
              "except OSError as exc:\n    print('closed', exc)\n")
    return host.ssh(f"python3 -c {shlex.quote(script)} {source} {target} {port}").stdout.strip()


def test_redis_port_open_to_the_workers_private_address_only(pair):
    import socket

    from roles.firewall import JUMP

    h, w = pair.host, pair.worker
    # Redis listens on the primary's addresses, IPv4 and IPv6 (the host reaches itself there): only the
    # firewall keeps others out
    for address in (h.address, h.address6):
        assert _connect_from(h, address, address, 6379) == "open", address
    rules = h.ssh("sudo iptables -S SEATWATCH").stdout.splitlines()
    assert [r for r in rules if "--dport 6379" in r] == [
        f"-A SEATWATCH -s {pair.private}/32 -p tcp -m tcp --dport 6379 -j ACCEPT"], rules
    assert not any("6379" in r for r in h.ssh("sudo ip6tables -S SEATWATCH").stdout.splitlines())
    for host in (h, w):
        for tool in ("iptables", "ip6tables"):
            assert host.ssh(f"sudo {tool} -S INPUT 1").stdout.strip() == JUMP
    # from this machine (a third address) Redis is unreachable on IPv4 and IPv6; the web ports answer
    for address in (h.address, h.address6):
        with pytest.raises(OSError):
            socket.create_connection((address, 6379), timeout=3).close()
        socket.create_connection((address, 443), timeout=5).close()
    # from the worker: its private address gets through, its ssh address does not
    assert _connect_from(w, pair.private, h.address, 6379) == "open"
    assert _connect_from(w, w.address, h.address, 6379).startswith("closed")
    # the worker host serves nothing: only ssh is open there
    assert not any("--dport 80 " in r or "--dport 443 " in r
                   for r in w.ssh("sudo iptables -S SEATWATCH").stdout.splitlines())
    # and it reaches Redis through that address (its heartbeat), with the password only
    out = w.ssh(f"sudo -u {APP_USER} {RUN} heartbeat").stdout
    assert pair.host.name in out


def test_checks_spread_over_both_hosts(pair):
    term = "2261"
    sections = [f"{20000 + 2 * i}" for i in range(16)]  # even: the :00 group
    user_id = pair.sql("insert into auth.users (email) values ('spread@asu.edu') returning id")[0][0]
    for nbr in sections:
        pair.sql("insert into public.class_watches (user_id, term, subject, catalog_nbr, class_nbr) "
                 "values (%s, %s, 'CSE', '110', %s)", (user_id, term, nbr))
        pair.scraper.set_section(term, nbr, seats_available=0)
    pair.scraper.delay = 1.0  # long enough that both hosts' threads take some
    before = len(pair.scraper.clients)
    pair.forget_cron_slots()  # the scheduler may have run this hour's slot already
    code, body = pair.https("/api/cron?group=even", method="POST",
                            headers={"Authorization": f"Bearer {pair.cron_secret}"})
    assert code == 200 and json.loads(body)["sections_enqueued"] >= len(sections), body
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(pair.scraper.clients) - before < len(sections):
        time.sleep(0.5)
    pair.scraper.delay = 0.0
    clients = pair.scraper.clients[before:]
    report(f"scrapes by host: { {c: clients.count(c) for c in set(clients)} }")
    # the worker reaches the primary's network (where the stand-ins listen too) from its private address
    assert set(clients) == {pair.host.address, pair.private}, clients


def test_both_hosts_come_back_after_a_reboot(pair):
    # One after the other, as an operator would: a worker host that boots while the primary's Redis is
    # down has nothing to work on until it is back (its heartbeat rides on its own tick and resumes then).
    pair.host.reboot()
    code, _ = pair.wait_healthy()
    assert code == 200
    pair.worker.reboot()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        procs = json.loads((o := pair.worker.ssh(f"{PM2} jlist").stdout)[o.index("["):])
        by_host = {b["host"]: b for b in beats(pair)}
        if procs and procs[0]["pm2_env"]["status"] == "online" and \
                by_host.get(pair.worker.name, {}).get("pid") == procs[0]["pid"]:
            break
        time.sleep(2)
    else:
        pytest.fail("the worker host's worker did not come back and beat after its reboot")
    report(f"two-host test: {time.monotonic() - pair.t0:.0f}s from the fresh deploy to both rebooted")
