"""firewall: one promise on every host, IPv4 and IPv6, whatever firewall the image came with.

    every host   the ssh port (22 unless SEATWATCH_SSH_PORT says otherwise) from anywhere
    the primary  also 80/tcp, 443/tcp and 443/udp (HTTP/3) from anywhere, and the Redis port from the
                 inventory's worker hosts only (their private addresses), when they use its Redis
    nothing else (loopback, replies to our own connections, ICMP/ICMPv6 and DHCPv6 replies aside)

The rules live in a chain of our own, SEATWATCH, that ends in REJECT, jumped to from the first rule of
INPUT (iptables and ip6tables). The chain is replaced as a whole with `iptables-restore --noflush`
(atomic; nothing else is flushed), so the promise is the same on an Oracle Cloud image, whose
/etc/iptables/rules.v4 REJECTs all but SSH (its rules stay, untouched, behind our jump), and on an
image without a firewall, where nothing else would close the other ports. The rules are saved with
netfilter-persistent (rules.v4 and rules.v6), so they come back at boot. A host without IPv6 gets the
IPv4 rules only.

Redis and the worker hosts: the workers reach the primary's Redis over an address the operator names
as private (docs/deploy.md, "More than one host"): `SEATWATCH_WORKERS=ssh-address=private-address`, or
the host data `private_address`; without one, the worker's ssh address, if it is not a global one
(10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7...). The ACCEPT's source is that address; a global
one is refused, as the Redis password and the queue would cross the internet in plain text.

firewall_mode (SEATWATCH_FIREWALL): auto (default; `iptables` is the same) applies the promise, off
never touches the firewall (the operator keeps the promise by other means: say so in the runbook).
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server

from roles.common import DeployError, cfg, is_primary, local_redis

CHAIN = "SEATWATCH"
JUMP = f'-A INPUT -m comment --comment "seatwatch firewall" -j {CHAIN}'
WEB = [("tcp", 80), ("tcp", 443), ("udp", 443)]
FAMILIES = {4: "iptables", 6: "ip6tables"}

STATE = r"""
for t in iptables ip6tables; do
  [ "$t" = ip6tables ] && [ ! -e /proc/net/if_inet6 ] && { echo "## ip6tables absent"; continue; }
  echo "## $t"; $t -S SEATWATCH 2>/dev/null; $t -S INPUT 1 2>/dev/null
done
echo "## saved"; grep -h -c -- '-j SEATWATCH' /etc/iptables/rules.v4 /etc/iptables/rules.v6 2>/dev/null
true
"""


def open_ports() -> list[tuple[str, int]]:
    ports = [("tcp", int(host.data.get("ssh_port") or 22))]
    return ports + (WEB if is_primary() else [])


def chain_rules(family: int, ports: list[tuple[str, int]], redis_port: int, redis_sources: list[str]) -> list[str]:
    """The SEATWATCH chain as `iptables -S` prints it (so the deploy can compare it with the host's)."""
    rules = ["-i lo -j ACCEPT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    if family == 4:
        rules.append("-p icmp -j ACCEPT")
    else:  # neighbour discovery and router advertisements are ICMPv6; DHCPv6 replies come from link-local
        rules += ["-p ipv6-icmp -j ACCEPT",
                  "-s fe80::/10 -d fe80::/10 -p udp -m udp --sport 547 --dport 546 -j ACCEPT"]
    rules += [f"-p {proto} -m {proto} --dport {port} -j ACCEPT" for proto, port in ports]
    for source in redis_sources:
        ip = ipaddress.ip_address(source)
        if ip.version == family:
            rules.append(f"-s {ip}/{ip.max_prefixlen} -p tcp -m tcp --dport {redis_port} -j ACCEPT")
    rules.append("-j REJECT --reject-with " + ("icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"))
    return [f"-A {CHAIN} {rule}" for rule in rules]


def wanted_state(chains: dict[int, list[str]], families: list[int]) -> str:
    out = []
    for family in (4, 6):
        if family in families:
            out += [f"## {FAMILIES[family]}", f"-N {CHAIN}", *chains[family], JUMP]
        else:
            out.append(f"## {FAMILIES[family]} absent")
    out += ["## saved", *(["1"] * len(families))]
    return "\n".join(out)


@deploy("Firewall")
def firewall() -> None:
    if cfg("firewall_mode").lower() == "off":
        return
    state = host.get_fact(Command, command=STATE) or ""
    families = [4] + ([] if "## ip6tables absent" in state else [6])
    redis_port = int(cfg("redis_port"))
    sources = redis_clients()
    chains = {f: chain_rules(f, open_ports(), redis_port, sources) for f in families}
    if state.strip() == wanted_state(chains, families):
        return

    apt.packages(name="Install iptables-persistent", packages=["iptables", "iptables-persistent"],
                 no_recommends=True)
    commands = []
    for family in families:
        tool = FAMILIES[family]
        table = "\n".join(["*filter", f":{CHAIN} - [0:0]", *chains[family], "COMMIT", ""])
        commands.append(f"{tool}-restore --noflush <<'EOF'\n{table}EOF")
        jump = JUMP.replace("-A INPUT ", "", 1)
        commands.append(f"if [ \"$({tool} -S INPUT 1)\" != '{JUMP}' ]; then "
                        f"while {tool} -D INPUT {jump} 2>/dev/null; do :; done; {tool} -I INPUT 1 {jump}; fi")
    commands.append("netfilter-persistent save")
    opened = ", ".join(f"{port}/{proto}" for proto, port in open_ports())
    server.shell(
        name=f"Firewall ({'IPv4 and IPv6' if 6 in families else 'IPv4'}): {opened} from anywhere"
             + (f", {redis_port}/tcp from {', '.join(sources)}" if sources else "") + ", nothing else",
        commands=commands,
    )


def redis_clients() -> list[str]:
    """The worker hosts' private addresses, when they use the primary's Redis (bound beyond localhost)."""
    from pyinfra import inventory

    bind = [a.lstrip("-") for a in str(cfg("redis_bind")).split()]
    if not is_primary() or not local_redis() or all(a in ("127.0.0.1", "::1", "localhost") for a in bind):
        return []
    workers = [(w.name, w.data.get("private_address")) for w in inventory.get_group("workers", [])]
    return private_sources(workers, os.environ.get("REDIS_URL", ""))


def private_sources(workers: list[tuple[str, str | None]], redis_url: str) -> list[str]:
    """[(ssh address, named private address or None)] -> the addresses to accept Redis from; refuses a
    public one (the password and the queue would cross the internet in plain text)."""
    out = []
    for name, named in workers:
        address = str(named or name).strip()
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise DeployError(f"worker host {name}: name its private address "
                              f"(SEATWATCH_WORKERS={name}=10.0.0.7, or host data private_address)") from None
        if ip.is_global:
            raise DeployError(f"worker host {name} would reach Redis over the public address {ip}; name its "
                              f"private address (SEATWATCH_WORKERS={name}=<private address>)")
        out.append(str(ip))
    redis_host = urlsplit(redis_url).hostname or ""
    try:
        public = ipaddress.ip_address(redis_host).is_global
    except ValueError:
        public = False  # a name: the operator's DNS decides; docs/deploy.md says to use the private address
    if out and public:
        raise DeployError("REDIS_URL points the worker hosts at a public address of the primary; use its "
                          "private address (docs/deploy.md, \"More than one host\")")
    return out
