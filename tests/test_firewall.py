"""The firewall's chain (roles/firewall.py): what it opens, that iptables takes it and prints it back
exactly as the deploy compares it, and that Redis is opened to private addresses only."""

from __future__ import annotations

import os
import subprocess

import pytest

from roles.common import DeployError
from roles.firewall import CHAIN, JUMP, WEB, chain_rules, private_sources, wanted_state

PRIMARY = [("tcp", 22), *WEB]


def test_the_chain_opens_ssh_web_and_redis_from_the_workers_then_rejects():
    v4 = chain_rules(4, PRIMARY, 6379, ["10.0.0.6", "fd00::6"])
    v6 = chain_rules(6, PRIMARY, 6379, ["10.0.0.6", "fd00::6"])
    for rules in (v4, v6):
        assert rules[-1].startswith(f"-A {CHAIN} -j REJECT")
        for proto, port in PRIMARY:
            assert f"-A {CHAIN} -p {proto} -m {proto} --dport {port} -j ACCEPT" in rules
        assert sum("--dport 6379" in r for r in rules) == 1  # each address in its own family only
    assert f"-A {CHAIN} -s 10.0.0.6/32 -p tcp -m tcp --dport 6379 -j ACCEPT" in v4
    assert f"-A {CHAIN} -s fd00::6/128 -p tcp -m tcp --dport 6379 -j ACCEPT" in v6
    worker = chain_rules(4, [("tcp", 22)], 6379, [])
    assert not any("--dport 80 " in r or "6379" in r for r in worker)


def test_redis_is_opened_to_private_addresses_only():
    assert private_sources([("10.0.0.6", None)], "redis://:pw@10.0.0.5:6379/0") == ["10.0.0.6"]
    # a public ssh address with its private address named: the private one is the source
    assert private_sources([("34.90.1.7", "10.0.0.7")], "redis://:pw@10.0.0.5:6379/0") == ["10.0.0.7"]
    with pytest.raises(DeployError, match="34.90.1.7.*SEATWATCH_WORKERS"):
        private_sources([("34.90.1.7", None)], "redis://:pw@10.0.0.5:6379/0")
    with pytest.raises(DeployError, match="name its private address"):
        private_sources([("worker1.example.com", None)], "redis://:pw@10.0.0.5:6379/0")
    with pytest.raises(DeployError, match="REDIS_URL") as exc:
        private_sources([("10.0.0.6", None)], "redis://:secret-pw@34.90.1.5:6379/0")
    assert "secret-pw" not in str(exc.value)


@pytest.mark.usefixtures("root_user")  # a network namespace
def test_iptables_takes_the_chain_and_prints_it_back_as_the_deploy_compares_it():
    ns = f"swfw{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        chains = {}
        for family, tool in ((4, "iptables"), (6, "ip6tables")):
            chains[family] = chain_rules(family, PRIMARY, 6379, ["10.0.0.6", "fd00::6"])
            table = "\n".join(["*filter", f":{CHAIN} - [0:0]", *chains[family], "COMMIT", ""])
            for _ in range(2):  # twice: the chain is replaced, not appended to
                subprocess.run(["ip", "netns", "exec", ns, f"{tool}-restore", "--noflush"], input=table,
                               text=True, check=True)
            jump = JUMP.replace("-A INPUT ", "", 1)
            subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"{tool} -I INPUT 1 {jump}"], check=True)
        listed = subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c",
             "for t in iptables ip6tables; do echo \"## $t\"; $t -S SEATWATCH; $t -S INPUT 1; done"],
            capture_output=True, text=True, check=True).stdout
        assert listed.strip() == wanted_state(chains, [4, 6]).split("\n## saved")[0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_state_probe_succeeds_on_a_host_without_any_firewall(tmp_path):
    """pyinfra fails a fact whose command exits non-zero: the probe must not, whatever it finds."""
    from roles.firewall import STATE

    cp = subprocess.run(["sh", "-c", STATE], capture_output=True, text=True,
                        env={"PATH": f"{tmp_path}:/usr/bin:/bin"})  # iptables absent from PATH here
    assert cp.returncode == 0 and "## saved" in cp.stdout
