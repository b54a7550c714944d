"""firewall: open 80/tcp, 443/tcp and 443/udp on hosts whose image ships a REJECT-all iptables policy.

Oracle Cloud's Ubuntu images carry /etc/iptables/rules.v4 with an INPUT chain that ends in
`-j REJECT --reject-with icmp-host-prohibited` and allows only SSH. There we insert ACCEPT rules
*before* that REJECT (appending after it would never match) and persist them with
netfilter-persistent. We never flush: the image's rules (SSH, the metadata service) stay.

firewall_mode (SEATWATCH_FIREWALL):
  auto      (default) act only when /etc/iptables/rules.v4 exists; leave other hosts' firewalls alone
  iptables  act even without rules.v4 (installs iptables-persistent and saves the rules)
  off       never touch the firewall

With worker hosts in the inventory and the primary's Redis bound beyond localhost (scale-out), the
primary also accepts the Redis port from each worker host's address, and from nobody else.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server

from roles.common import cfg, is_primary, local_redis

RULES_FILE = "/etc/iptables/rules.v4"
OPEN = [("tcp", 80), ("tcp", 443), ("udp", 443)]


@deploy("Firewall")
def firewall() -> None:
    mode = cfg("firewall_mode").lower()
    if mode == "off" or not is_primary():  # workers serve nothing
        return
    if mode == "auto" and not host.get_fact(File, path=RULES_FILE):
        return

    apt.packages(name="Install iptables-persistent", packages=["iptables", "iptables-persistent"],
                 no_recommends=True)
    current = host.get_fact(Command, command="iptables -S INPUT 2>/dev/null || true") or ""
    lines = current.splitlines()
    wanted = [(proto, port, None) for proto, port in OPEN]
    wanted += [("tcp", int(cfg("redis_port")), source) for source in redis_clients()]
    missing = [
        (proto, port, source) for proto, port, source in wanted
        if not any(f"-p {proto}" in line and f"--dport {port} " in f"{line} " and "-j ACCEPT" in line
                   and (source is None or f"-s {source}/32 " in f"{line} ") for line in lines)
    ]
    if not missing:
        return
    commands = []
    for proto, port, source in missing:
        src = f"-s {source}/32 " if source else ""
        spec = f"INPUT {src}-p {proto} -m state --state NEW -m {proto} --dport {port} -j ACCEPT"
        # position of the first REJECT in INPUT, found at run time; none -> append
        commands.append(
            "pos=$(iptables -L INPUT --line-numbers -n | awk '$2 == \"REJECT\" {print $1; exit}'); "
            f"if [ -n \"$pos\" ]; then iptables -I {spec.replace('INPUT', 'INPUT $pos', 1)}; "
            f"else iptables -A {spec}; fi"
        )
    commands.append("netfilter-persistent save")
    server.shell(
        name="Accept " + ", ".join(f"{port}/{proto}" + (f" from {source}" if source else "")
                                   for proto, port, source in missing) + " before the REJECT rule",
        commands=commands,
    )


def redis_clients() -> list[str]:
    """Worker hosts' addresses, when they use the primary's Redis (it is bound beyond localhost)."""
    import ipaddress

    from pyinfra import inventory

    bind = [a.lstrip("-") for a in str(cfg("redis_bind")).split()]
    if not local_redis() or all(a in ("127.0.0.1", "::1", "localhost") for a in bind):
        return []
    out = []
    for h in inventory.get_group("workers", []):
        try:
            out.append(str(ipaddress.ip_address(h.name)))
        except ValueError:
            out.append(h.name)
    return out
