"""distro: the supported distributions, and the branch each role takes on each (one table).

Every per-distribution choice of the roles is read from DISTROS, keyed by the host's
(os-release ID, major version) as pyinfra's LinuxDistribution fact reports them. The versions
are what the distribution's own archive installs (README "Supported systems"); the branches:

  python   the interpreter the release venv is made with, and its apt packages
           (Ubuntu 22.04's python3 is 3.10: python3.11 from universe instead)
  redis    the Redis a first run renders its config for, before the package (or its package lists)
           exist; later runs read the installed version (roles/redis.py)
  pm2      the PM2 that runs on the distribution's Node.js (PM2 6+ needs Node 16+: Ubuntu 22.04's is 12)
  caddy    "distro": Debian's/Ubuntu's own caddy package; "upstream": Caddy's signed apt repository
           (Ubuntu 22.04 has no caddy package)
  valkey   the valkey-server the archive has, if any (SEATWATCH_REDIS_PACKAGE=valkey, roles/redis.py)
  node     the archive's Node.js (major, minor). The site (Next.js 16) needs 20.9+: where the archive's is
           older and the site is on, Node.js comes from NodeSource's signed apt repository, pinned to one
           major line and its signing key's fingerprint (node_plan; roles/node.py)
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.facts.server import Arch, LinuxDistribution

from roles.config import DeployError


@dataclass(frozen=True)
class Distro:
    label: str
    python: str  # interpreter for the virtualenv
    python_packages: tuple[str, ...]
    redis: tuple[int, int]  # redis-server's major.minor in the archive
    pm2: str
    caddy: str  # "distro" | "upstream"
    valkey: tuple[int, int] | None = None  # valkey-server's major.minor, if the archive has it
    node: tuple[int, int] = (0, 0)  # the archive's nodejs major.minor


PM2_CURRENT = "7.0.4"
PM2_NODE12 = "5.4.3"  # the last PM2 line that runs on Node.js 12
_PY3 = ("python3", "python3-venv")

DISTROS: dict[tuple[str, int], Distro] = {
    ("debian", 12): Distro("Debian 12 (bookworm)", "python3", _PY3, (7, 0), PM2_CURRENT, "distro", node=(18, 19)),
    ("debian", 13): Distro("Debian 13 (trixie)", "python3", _PY3, (8, 0), PM2_CURRENT, "distro", valkey=(8, 1),
                           node=(20, 19)),
    ("ubuntu", 22): Distro("Ubuntu 22.04 LTS", "python3.11", ("python3.11", "python3.11-venv"), (6, 0),
                           PM2_NODE12, "upstream", node=(12, 22)),
    ("ubuntu", 24): Distro("Ubuntu 24.04 LTS", "python3", _PY3, (7, 0), PM2_CURRENT, "distro", node=(18, 19)),
    ("ubuntu", 26): Distro("Ubuntu 26.04 LTS", "python3", _PY3, (8, 0), PM2_CURRENT, "distro", valkey=(8, 1),
                           node=(22, 0)),
}
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}  # uname -m -> Debian's architecture name


class UnsupportedSystem(DeployError):
    """The host's distribution or architecture is not one the deploy supports (one line)."""


def supported_names() -> str:
    return ", ".join(d.label.split(" (")[0] for d in DISTROS.values())


def host_distro() -> Distro:
    """The table row of the host this deploy runs against; UnsupportedSystem names what it found, in one line."""
    facts = host.get_fact(LinuxDistribution)
    key = ((facts.get("name") or "").lower(), facts.get("major"))
    if key not in DISTROS:
        meta = facts.get("release_meta") or {}
        found = (meta.get("PRETTY_NAME") or " ".join(str(p) for p in (facts.get("name"), facts.get("major"))
                                                       if p)).replace("\n", " ") or "an unknown system"
        raise UnsupportedSystem(f"unsupported OS {found}: {supported_names()} wanted")
    return DISTROS[key]


def host_deb_arch() -> str:
    arch = host.get_fact(Arch)
    if arch not in ARCHES:
        raise UnsupportedSystem(f"unsupported architecture {arch}: x86_64 or aarch64 (arm64) wanted")
    return ARCHES[arch]


SITE_NODE_MIN = (20, 9)  # Next.js 16
NODESOURCE_MAJOR = 22  # the pinned line: an LTS until 2027-04
NODESOURCE_KEY_URL = "https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key"
# the key the download must be (checked with gpg before it is trusted): NodeSource's repository signing key
NODESOURCE_KEY_FINGERPRINT = "6F71F525282841EEDAF851B42F59B5F99B1BE0B4"
NODESOURCE_REPO = f"https://deb.nodesource.com/node_{NODESOURCE_MAJOR}.x"


@dataclass(frozen=True)
class NodePlan:
    source: str  # "distro" | "nodesource"
    packages: tuple[str, ...]  # NodeSource's nodejs carries npm (and conflicts with the archive's npm)
    pm2: str


def node_plan(site: bool) -> NodePlan:
    """Where this host's Node.js comes from: the archive's unless the site needs a newer one than it has."""
    distro = host_distro()
    if site and distro.node < SITE_NODE_MIN:
        return NodePlan("nodesource", ("nodejs",), PM2_CURRENT)
    return NodePlan("distro", ("nodejs", "npm"), distro.pm2)
