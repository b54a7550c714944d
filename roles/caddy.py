"""caddy: HTTPS in front of waitress; the service's routes proxied, the rest of the site optionally too.

Debian 12/13 and Ubuntu 24.04/26.04 ship caddy; Ubuntu 22.04 does not, so there the role adds Caddy's
own apt repository (signed; amd64/arm64 by the host's architecture) and refreshes the package lists
whenever caddy is not installed yet (not only when the repository file is new: a first run that died
after adding it is repaired by the next). Debian's package also enables caddy-api.service (which
resumes an autosaved API config); it is stopped and disabled.

The Caddyfile is rendered here, uploaded as a candidate (/etc/caddy/Caddyfile.candidate), validated
with `caddy validate`, and only then moved over the live file and Caddy reloaded. A bad setting fails
the deploy and leaves the old file live; the rerun compares the live file (not the candidate) with
what it wants, so it tries again instead of reporting nothing to do.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd

from roles.common import cfg, is_primary, render, sha256_text
from roles.distro import host_deb_arch, host_distro

CADDY_KEY_URL = "https://dl.cloudsmith.io/public/caddy/stable/gpg.key"
CADDY_REPO = "https://dl.cloudsmith.io/public/caddy/stable/deb/debian"
LIVE = "/etc/caddy/Caddyfile"
CANDIDATE = "/etc/caddy/Caddyfile.candidate"


def caddyfile_text() -> str:
    tls = cfg("caddy_tls")
    names = list(dict.fromkeys([cfg("caddy_domain"),
                                *[d for d in str(cfg("caddy_extra_domains")).replace(",", " ").split() if d]]))
    from roles.site import SITE_BODY_LIMIT, site_enabled, site_upstream

    site = site_enabled()  # the Next.js site on this host (roles/site.py)
    return render("Caddyfile.j2", domain=", ".join(names), http_names=", ".join(f"http://{n}" for n in names),
                  tls_internal=(tls == "internal"), email=cfg("caddy_email"), upstream=cfg("caddy_site_upstream"),
                  port=cfg("app_port"), site=site, site_upstream=site_upstream() if site else "",
                  site_root=cfg("site_root"), site_body_limit=SITE_BODY_LIMIT)


@deploy("Caddy")
def caddy() -> None:
    if not is_primary():
        return
    if host_distro().caddy == "upstream":  # no caddy in the archive (Ubuntu 22.04): Caddy's own repository
        deb_arch = host_deb_arch()
        files.download(name="Caddy's apt signing key", src=CADDY_KEY_URL,
                       dest="/etc/apt/keyrings/caddy-stable.asc", mode="644")
        apt.repo(name="Caddy's apt repository",
                 src=f"deb [arch={deb_arch} signed-by=/etc/apt/keyrings/caddy-stable.asc] "
                     f"{CADDY_REPO} any-version main",
                 filename="caddy-stable")
        installed = host.get_fact(Command, command="dpkg-query -W -f='${Status}' caddy 2>/dev/null || true")
        if "install ok installed" not in (installed or ""):
            apt.update(name="Refresh the package lists for Caddy (caddy is not installed yet)")
    apt.packages(name="Install Caddy", packages=["caddy"], no_recommends=True)
    systemd.service(name="Stop and disable caddy-api.service", service="caddy-api", running=False,
                    enabled=False)
    files.directory(name="Caddy's log directory", path="/var/log/caddy", user="caddy", group="caddy",
                    mode="755")
    text = caddyfile_text()
    changed = host.get_fact(Sha256File, path=LIVE) != sha256_text(text)
    if changed:
        files.put(name="Upload the Caddyfile candidate", src=StringIO(text), dest=CANDIDATE, mode="644")
        server.shell(name="Validate the candidate Caddyfile, then put it live",
                     commands=[f"out=$(caddy validate --adapter caddyfile --config {CANDIDATE} 2>&1) || "
                               f"{{ echo \"the Caddyfile candidate is invalid; {LIVE} stays as it was:\" >&2; "
                               f"echo \"$out\" | tail -n 5 >&2; exit 1; }}",
                               f"mv -f {CANDIDATE} {LIVE}"])
    systemd.service(name="Run Caddy now and at boot", service="caddy", running=True, enabled=True)
    if changed:
        systemd.service(name="Reload Caddy: the Caddyfile changed", service="caddy", reloaded=True)
