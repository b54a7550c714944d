"""caddy: HTTPS in front of waitress; the service's routes proxied, the rest of the site optionally too.

Debian 12 and Ubuntu 24.04 ship caddy; Ubuntu 22.04 does not, so there the role adds Caddy's
own apt repository (signed; amd64/arm64 by the host's architecture). Debian's package also
enables caddy-api.service (which resumes an autosaved API config); it is stopped and disabled.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Arch, LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from roles.common import TEMPLATES, cfg, is_primary

CADDY_KEY_URL = "https://dl.cloudsmith.io/public/caddy/stable/gpg.key"
CADDY_REPO = "https://dl.cloudsmith.io/public/caddy/stable/deb/debian"


@deploy("Caddy")
def caddy() -> None:
    if not is_primary():
        return
    distro = host.get_fact(LinuxDistribution)
    if (distro.get("name") or "").lower() == "ubuntu" and distro.get("major") == 22:
        deb_arch = {"x86_64": "amd64", "aarch64": "arm64"}[host.get_fact(Arch)]
        key = files.download(name="Caddy's apt signing key", src=CADDY_KEY_URL,
                             dest="/etc/apt/keyrings/caddy-stable.asc", mode="644")
        repo = apt.repo(name="Caddy's apt repository",
                        src=f"deb [arch={deb_arch} signed-by=/etc/apt/keyrings/caddy-stable.asc] "
                            f"{CADDY_REPO} any-version main",
                        filename="caddy-stable")
        apt.update(name="Refresh the package lists for Caddy", _if=lambda: key.did_change() or repo.did_change())
    apt.packages(name="Install Caddy", packages=["caddy"], no_recommends=True)
    systemd.service(name="Stop and disable caddy-api.service", service="caddy-api", running=False,
                    enabled=False)
    files.directory(name="Caddy's log directory", path="/var/log/caddy", user="caddy", group="caddy",
                    mode="755")
    tls = cfg("caddy_tls")
    caddyfile = files.template(
        name="Render the Caddyfile", src=str(TEMPLATES / "Caddyfile.j2"), dest="/etc/caddy/Caddyfile",
        mode="644", domain=cfg("caddy_domain"), tls_internal=(tls == "internal"),
        email=cfg("caddy_email"), upstream=cfg("caddy_site_upstream"), port=cfg("app_port"),
    )
    server.shell(name="Validate the Caddyfile",
                 commands=["caddy validate --adapter caddyfile --config /etc/caddy/Caddyfile"],
                 _if=caddyfile.did_change)
    systemd.service(name="Run Caddy now and at boot", service="caddy", running=True, enabled=True)
    systemd.service(name="Reload Caddy when the Caddyfile changed", service="caddy", reloaded=True,
                    _if=caddyfile.did_change)
