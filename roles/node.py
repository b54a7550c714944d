"""node: Node.js for PM2 and, with the site on, for the Next.js server (roles/distro.py's node_plan picks the source).

The archive's nodejs and npm wherever it is enough: everywhere without the site (PM2 runs on the archive's
Node, PM2 5 on Ubuntu 22.04's Node 12), and with the site on Debian 13 and Ubuntu 26.04 (Node 20.9+).
Elsewhere, with the site on, NodeSource's apt repository for one pinned major line: its signing key is
downloaded and accepted only when its fingerprint is the pinned one (gpg --show-keys), the repository is
signed-by that key alone, and an apt pin makes its nodejs win over the archive's. NodeSource's nodejs
carries npm and conflicts with the archive's npm package, which the switch removes; PM2 (npm -g) stays.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server

from roles.common import site_enabled
from roles.distro import (NODESOURCE_KEY_FINGERPRINT, NODESOURCE_KEY_URL, NODESOURCE_MAJOR, NODESOURCE_REPO,
                          host_deb_arch, node_plan)

NODESOURCE_KEY = "/etc/apt/keyrings/nodesource.asc"
_FINGERPRINT = "gpg --show-keys --with-colons {key} 2>/dev/null | awk -F: '/^fpr:/ {{print $10; exit}}'"


@deploy("Node.js")
def node() -> None:
    plan = node_plan(site_enabled())
    if plan.source == "distro":
        apt.packages(name="Install Node.js and npm", packages=list(plan.packages), no_recommends=True)
        return
    apt.packages(name="Install gpg (to check NodeSource's key)", packages=["gpg"], no_recommends=True)
    have = (host.get_fact(Command, command=_FINGERPRINT.format(key=NODESOURCE_KEY) + " || true") or "").strip()
    if have != NODESOURCE_KEY_FINGERPRINT:
        downloaded = _FINGERPRINT.format(key='"$tmp"')
        server.shell(
            name=f"NodeSource's apt signing key, accepted only with the pinned fingerprint {NODESOURCE_KEY_FINGERPRINT}",
            commands=[
                f"tmp=$(mktemp) && curl -fsSL --max-time 60 {NODESOURCE_KEY_URL} -o \"$tmp\" && "
                f"fpr=$({downloaded}) && "
                f"if [ \"$fpr\" != {NODESOURCE_KEY_FINGERPRINT} ]; then "
                f"echo \"NodeSource's key has fingerprint '$fpr', not the pinned {NODESOURCE_KEY_FINGERPRINT}\" >&2; "
                f"rm -f \"$tmp\"; exit 1; fi; "
                f"install -m 644 \"$tmp\" {NODESOURCE_KEY} && rm -f \"$tmp\""],
        )
    apt.repo(name=f"NodeSource's apt repository (Node.js {NODESOURCE_MAJOR}.x)",
             src=f"deb [arch={host_deb_arch()} signed-by={NODESOURCE_KEY}] {NODESOURCE_REPO} nodistro main",
             filename="nodesource")
    files.put(name="Prefer NodeSource's nodejs over the archive's",
              src=StringIO("# managed by pyinfra (roles/node.py)\nPackage: nodejs\n"
                           "Pin: origin deb.nodesource.com\nPin-Priority: 600\n"),
              dest="/etc/apt/preferences.d/nodesource", mode="644")
    version = (host.get_fact(Command, command="node --version 2>/dev/null || true") or "").strip()
    if not version.startswith(f"v{NODESOURCE_MAJOR}."):
        apt.update(name=f"Refresh the package lists for NodeSource (node is {version or 'not installed'})")
        server.shell(name=f"Install Node.js {NODESOURCE_MAJOR} from NodeSource (the archive's npm package goes)",
                     commands=["DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                               "nodejs npm-",
                               # apt-get update only warns when a repository does not answer, and the
                               # install then takes the archive's older nodejs (no npm): say so here,
                               # not as "npm: not found" at PM2's install
                               f'v=$(node --version 2>/dev/null); case "$v" in v{NODESOURCE_MAJOR}.*) ;; '
                               f'*) echo "Node.js {NODESOURCE_MAJOR} did not come from NodeSource (node is '
                               f'${{v:-missing}}): could apt reach {NODESOURCE_REPO}?" >&2; exit 1;; esac'])
