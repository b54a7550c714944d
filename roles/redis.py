"""redis: the local Redis of the primary: localhost only, a password, a memory cap, enabled at boot.

Skipped when REDIS_URL points at another host (a managed Redis) or redis_enabled is off.

The configuration is rendered for the Redis version the host has (or will get from apt):
`bind 127.0.0.1 -::1` ("-": skip an address that is not available) is Redis 6.2+ syntax; Redis 6.0
(Ubuntu 22.04) refuses to start with it, so there the optional addresses are left out.
The file holds the password: it is written through stdin with umask 027 (never world-readable,
not even in /tmp) and compared by hash, so `pyinfra --diff` has nothing to print.
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd

from roles.common import cfg, local_redis, redis_password, render, sha256_text
from roles.distro import host_distro

CONF = "/etc/redis/redis.conf"
VERSION_COMMAND = (
    "dpkg-query -W -f='${Version}' redis-server 2>/dev/null || "
    "apt-cache policy redis-server 2>/dev/null | awk '/Candidate:/ {print $2}'"
)


def parse_version(text: str | None) -> tuple[int, int] | None:
    """'5:7.0.15-1~deb12u1' -> (7, 0); '6.0.16' -> (6, 0); anything else -> None."""
    m = re.search(r"(?:^|:)(\d+)\.(\d+)", (text or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def bind_for(version: tuple[int, int], bind: str) -> str:
    """The bind line's addresses for this Redis: 6.2+ keeps optional ("-") addresses, 6.0 drops them."""
    words = bind.split()
    if version >= (6, 2):
        return " ".join(words)
    kept = [w for w in words if not w.startswith("-")]
    return " ".join(kept or ["127.0.0.1"])


def render_conf(version: tuple[int, int], bind: str, port: int, maxmemory: str, password: str) -> str:
    return render("redis.conf.j2", bind=bind_for(version, bind), port=port, maxmemory=maxmemory,
                  password=password, version=f"{version[0]}.{version[1]}")


def host_redis_version() -> tuple[int, int]:
    version = parse_version(host.get_fact(Command, command=VERSION_COMMAND))
    if version:
        return version
    # a first run (nothing installed, no package lists yet): what the distribution's archive installs
    return host_distro().redis


@deploy("Redis")
def redis() -> None:
    if not local_redis():
        return
    version = host_redis_version()
    apt.packages(name="Install Redis", packages=["redis-server"], no_recommends=True)
    text = render_conf(version, cfg("redis_bind"), cfg("redis_port"), cfg("redis_maxmemory"), redis_password())
    if host.get_fact(Sha256File, path=CONF) != sha256_text(text):
        server.shell(
            name=f"Configure Redis {version[0]}.{version[1]} (bind, password, memory cap; 0640, contents not shown)",
            commands=[f"umask 027 && cat > {CONF}.new && chown redis:redis {CONF}.new && chmod 640 {CONF}.new "
                      f"&& mv -f {CONF}.new {CONF}"],
            _stdin=text,
        )
        systemd.service(name="Restart Redis: its configuration changed", service="redis-server", restarted=True)
    systemd.service(name="Run Redis now and at boot", service="redis-server", running=True, enabled=True)
