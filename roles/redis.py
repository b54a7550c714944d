"""redis: the local Redis of the primary: localhost only, a password, a memory cap, enabled at boot.

Skipped when REDIS_URL points at another host (a managed Redis) or redis_enabled is off.

The app's credentials are an ACL user (the default one, restricted): every data command the app
needs, no administrative or dangerous one (templates/redis.conf.j2 lists them); docs/runbook.md says
how the operator reaches the server's own settings (the file, as root).

The configuration is rendered for the Redis version the host has (or will get from apt):
`bind 127.0.0.1 -::1` ("-": skip an address that is not available) is Redis 6.2+ syntax; Redis 6.0
(Ubuntu 22.04) refuses to start with it, so there the optional addresses are left out.
SEATWATCH_REDIS_PACKAGE=valkey installs Valkey (the BSD-licensed fork; Redis 8 is AGPL) instead,
where the archive has it (Debian 13, Ubuntu 26.04): valkey-server with the same configuration, under
its own paths and unit. The file holds the password: it is written through stdin with umask 027 (never world-readable,
not even in /tmp) and compared by hash, so `pyinfra --diff` has nothing to print.
"""

from __future__ import annotations

import hashlib
import re

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd

from roles.common import DeployError, cfg, local_redis, redis_password, render, sha256_text
from roles.distro import host_distro


@dataclass(frozen=True)
class Server:
    """One key-value server as the distribution packages it: package = unit, /etc/NAME/NAME.conf."""

    name: str  # redis | valkey
    label: str

    @property
    def package(self) -> str:
        return f"{self.name}-server"

    @property
    def conf(self) -> str:
        return f"/etc/{self.name}/{self.name}.conf"

    @property
    def version_command(self) -> str:
        return (f"dpkg-query -W -f='${{Version}}' {self.package} 2>/dev/null || "
                f"apt-cache policy {self.package} 2>/dev/null | awk '/Candidate:/ {{print $2}}'")


SERVERS = {"redis": Server("redis", "Redis"), "valkey": Server("valkey", "Valkey")}
CONF = SERVERS["redis"].conf
VERSION_COMMAND = SERVERS["redis"].version_command


def chosen_server() -> Server:
    choice = str(cfg("redis_package")).strip().lower()
    if choice not in SERVERS:
        raise DeployError("SEATWATCH_REDIS_PACKAGE must be redis or valkey")
    server_ = SERVERS[choice]
    if server_.name == "valkey" and host_distro().valkey is None:
        raise DeployError(f"SEATWATCH_REDIS_PACKAGE=valkey: {host_distro().label} has no valkey-server "
                          "(Debian 13 and Ubuntu 26.04 have it)")
    return server_


def parse_version(text: str | None) -> tuple[int, int] | None:
    """'5:7.0.15-1~deb12u1' -> (7, 0); '6.0.16' -> (6, 0); anything else -> None.

    A regex on purpose: dpkg's versions (epoch, revision, `~`) are not PEP 440, so `packaging`
    refuses them, and python-debian's Version would be a laptop dependency for the two numbers
    that decide the config syntax (major and minor)."""
    m = re.search(r"(?:^|:)(\d+)\.(\d+)", (text or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def bind_for(version: tuple[int, int], bind: str) -> str:
    """The bind line's addresses for this Redis: 6.2+ keeps optional ("-") addresses, 6.0 drops them."""
    words = bind.split()
    if version >= (6, 2):
        return " ".join(words)
    kept = [w for w in words if not w.startswith("-")]
    return " ".join(kept or ["127.0.0.1"])


def render_conf(version: tuple[int, int], bind: str, port: int, maxmemory: str, password: str,
                server_: Server = SERVERS["redis"]) -> str:
    # Valkey forked from Redis 7.2: its 7.2+ keeps the optional "-" addresses like Redis 6.2+
    # ACL users came with Redis 6.0 (every supported one has them); "&*" (its pub/sub channels)
    # with 6.2, and 6.0 refuses to start on it. Valkey forked from 7.2.
    return render("redis.conf.j2", bind=bind_for(version, bind), port=port, maxmemory=maxmemory,
                  password=password, version=f"{version[0]}.{version[1]}", server=server_.label,
                  kv=server_.name, service=server_.package,
                  password_sha256=hashlib.sha256(password.encode()).hexdigest(),
                  channels=version >= (6, 2))


def host_redis_version(server_: Server = SERVERS["redis"]) -> tuple[int, int]:
    version = parse_version(host.get_fact(Command, command=server_.version_command))
    if version:
        return version
    # a first run (nothing installed, no package lists yet): what the distribution's archive installs
    return host_distro().valkey if server_.name == "valkey" else host_distro().redis


@deploy("Redis")
def redis() -> None:
    if not local_redis():
        return
    kv = chosen_server()
    version = host_redis_version(kv)
    conf, unit, label = kv.conf, kv.package, kv.label
    apt.packages(name=f"Install {label}", packages=[kv.package], no_recommends=True)
    text = render_conf(version, cfg("redis_bind"), cfg("redis_port"), cfg("redis_maxmemory"), redis_password(), kv)
    if host.get_fact(Sha256File, path=conf) != sha256_text(text):
        server.shell(
            name=f"Configure {label} {version[0]}.{version[1]} (bind, password, memory cap; 0640, contents not shown)",
            commands=[f"umask 027 && cat > {conf}.new && chown {kv.name}:{kv.name} {conf}.new && chmod 640 {conf}.new "
                      f"&& mv -f {conf}.new {conf}"],
            _stdin=text,
        )
        systemd.service(name=f"Restart {label}: its configuration changed", service=unit, restarted=True)
    systemd.service(name=f"Run {label} now and at boot", service=unit, running=True, enabled=True)
