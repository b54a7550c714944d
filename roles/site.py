"""site: the Next.js site on the primary, built on the laptop (roles/sitebuild.py), run by PM2 under Node.

On only with SEATWATCH_SITE_SOURCE (the laptop's checkout of the site); without it this role does nothing.

Who owns what (the backend's layout, roles/app.py, with the site's own user beside the app user):

    /opt/seatwatch-site/              root:root 0755
      releases/ (site user)           <build key>/ server.js .next/ public/ node_modules/ .complete
      current -> releases/<key>       root's link, switched only by the site's activation
    /usr/local/lib/seatwatch/         site-run (exec wrapper), site-activate (+ .json: its config), site.config.js
    /etc/seatwatch/site.env           root:<site user> 0640: the site's server-side secrets (from the
                                      operator's site-secrets.env); the backend's app.env is root:<app user>
                                      0640, which the site user (not in that group) cannot read
    /var/lib/seatwatch/               site-active (the site gate's marker), site-gated/<key>
    /var/lib/seatwatch-site/          the site user's home: its PM2 (daemon, logs)

The site user has its own PM2 daemon (unit pm2-<site user>): PM2 starts processes as another user only when
its daemon runs as root, which nothing here does, so one daemon for both users would mean a root daemon
running the app's code. The cost is a second daemon's memory (docs/architecture.md has the figure).
The artifact's release is unpacked by the site user; the activation (root's site-activate under
systemd-run, like the backend's) switches `current`, reloads the site's PM2, gates on the site's `/`
answering below 500 and rolls back to the last gated site release when it does not.
"""

from __future__ import annotations

import os
import stat
import sys
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import files, server, systemd

from roles.common import (BIN_DIR, ENV_DIR, LOG_DIR, PROJECT, STATE_DIR, TEMPLATES, cfg, is_primary, render,
                          sha256_text, site_enabled)
from roles.config import DeployError, SettingsFileError, parse_env_file

NPM_ENV = {"LC_ALL": "C.UTF-8"}
RESERVED = ("PORT", "HOSTNAME", "NODE_ENV", "NODE_OPTIONS")  # set by site-run itself: not from the secrets file
SITE_BODY_LIMIT = "2MB"  # Caddy's cap on a request body to the site, 2,000,000 bytes (Next's server actions: 1 MB)


def site_paths() -> dict[str, str]:
    root = cfg("site_root")
    return {
        "root": root,
        "releases": f"{root}/releases",
        "current": f"{root}/current",
        "home": f"/var/lib/{cfg('site_user')}",
        "env_file": f"{ENV_DIR}/site.env",
        "run": f"{BIN_DIR}/site-run",
        "activate": f"{BIN_DIR}/site-activate",
        "ecosystem": f"{BIN_DIR}/site.config.js",
        "marker": f"{STATE_DIR}/site-active",
        "gated": f"{STATE_DIR}/site-gated",
        "uploads": f"{STATE_DIR}/uploads",
        "activate_log": f"{LOG_DIR}/site-activate.log",
    }


def site_upstream() -> str:
    return f"127.0.0.1:{cfg('site_port')}"


def site_preflight() -> None:
    """Before anything is planned: the settings the site needs (the build variables by name, the secrets file)."""
    if not site_enabled():
        return
    from roles.sitebuild import build_variables

    if str(cfg("caddy_site_upstream")).strip():
        raise DeployError("SEATWATCH_SITE_SOURCE and SEATWATCH_SITE_UPSTREAM are both set: the site is either "
                          "built and served here or proxied elsewhere")
    build_variables()
    site_environment()


def _secrets_file() -> Path:
    path = Path(os.path.expanduser(str(cfg("site_secrets_env"))))
    return path if path.is_absolute() else PROJECT / path


def site_environment() -> dict[str, str]:
    """The site's server-side secrets from the operator's file (missing: none). Names only in any message."""
    path = _secrets_file()
    if not path.is_file():
        return {}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        print(f"warning: {path} is readable by others (mode {mode:o}); chmod 600 it", file=sys.stderr)
    try:
        values = parse_env_file(path)
    except SettingsFileError as exc:
        raise DeployError(f"SEATWATCH_SITE_SECRETS_ENV: {exc}") from None
    for name, value in values.items():
        if name in RESERVED:
            raise DeployError(f"{path.name}: {name} is set by the deploy (SEATWATCH_SITE_PORT), not the site's env file")
        if "\n" in value or "\r" in value:
            raise DeployError(f"{path.name}: {name} contains a newline")
    return dict(sorted(values.items()))


@deploy("Site (Next.js)")
def site() -> None:
    if not site_enabled():
        _stop_a_site_turned_off()
        return
    from roles.distro import host_deb_arch
    from roles.pm2 import activation_command, activation_config, install_activation
    from roles.sitebuild import site_artifact

    key, artifact, commit = site_artifact(host_deb_arch())  # built on this laptop, or the cached build
    p = site_paths()
    user = cfg("site_user")
    as_site = {"_sudo_user": user, "_use_sudo_login": False}
    rel = f"{p['releases']}/{key}"

    server.user(name=f"Create the site's system user {user} (not in the app user's group)", user=user,
                system=True, home=p["home"], shell="/usr/sbin/nologin", create_home=True)
    for path in (p["root"], p["gated"]):
        files.directory(name=f"Root's directory {path}", path=path, user="root", group="root", mode="755")
    files.directory(name=f"{p['releases']} for {user}", path=p["releases"], user=user, group=user, mode="755")

    env_text = "# managed by pyinfra (roles/site.py): the site's server-side environment\n" + "".join(
        f"{k}={v}\n" for k, v in site_environment().items())
    if host.get_fact(Sha256File, path=p["env_file"]) != sha256_text(env_text):
        f = p["env_file"]
        server.shell(name=f"Write the site's env file (root:{user} 0640; contents not shown)",
                     commands=[f"umask 077 && cat > {f}.new && chgrp {user} {f}.new && chmod 640 {f}.new "
                               f"&& mv -f {f}.new {f}"],
                     _stdin=env_text)
    run_text = render("site-run.j2", root=p["root"], env_file=p["env_file"], port=cfg("site_port"),
                      heap_mb=int(cfg("site_heap_mb")))
    files.put(name="Install the site's run wrapper", src=StringIO(run_text), dest=p["run"], user="root",
              group="root", mode="755")
    ecosystem_text = render("site.config.js.j2", run=p["run"], root=p["root"],
                            max_memory_mb=int(cfg("site_max_memory_mb")), heap_mb=int(cfg("site_heap_mb")))
    files.put(name="Install the site's PM2 ecosystem file", src=StringIO(ecosystem_text), dest=p["ecosystem"],
              user="root", group="root", mode="644")
    gate_timeout = int(cfg("app_health_timeout"))
    config = activation_config(
        p, user, run=None, audit_name="site-activate", label="site release", failed="SITE DEPLOY FAILED",
        stable_seconds=5, apps=["site"], process="site", heartbeat=False, health_name="the site's /",
        # the page through the site's own port, as Caddy asks it: any answer below 500 (a redirect to sign in too)
        health_url=f"http://{site_upstream()}/", health_host=cfg("caddy_domain"), health_codes=[])
    activate_text = install_activation(p, config, "the site", module=False)
    files.template(name="Rotate the site's PM2 logs", src=str(TEMPLATES / "pm2-logrotate.j2"),
                   dest=f"/etc/logrotate.d/pm2-{user}", mode="644", user_name=user, home=p["home"])

    if not host.get_fact(File, path=f"{rel}/.complete"):
        upload = f"{p['uploads']}/site-{key}.tar.gz"
        files.put(name=f"Upload the site build {key} (commit {commit[:12]})", src=str(artifact), dest=upload,
                  user="root", group="root", mode="644")
        server.shell(name=f"Unpack the site build {key} (as {user})", commands=[
            f"umask 022 && rm -rf {rel} && mkdir {rel} && tar -xzf {upload} -C {rel} --no-same-owner "
            f"&& : > {rel}/.complete"], **as_site)
        server.shell(name="Remove the uploaded site build", commands=[f"rm -f {upload}"])
        keep = max(int(cfg("app_keep_releases")), 2)
        server.shell(name=f"Keep the {keep} newest site releases (never the current or the active one)", commands=[
            f"cur=$(readlink {p['current']} || true); act=$(cut -d' ' -f1 {p['marker']} 2>/dev/null || true); "
            f"cd {p['releases']} && ls -1t | while read -r r; do "
            f"[ -d \"$r\" ] && [ \"$PWD/$r\" != \"{rel}\" ] && [ \"$PWD/$r\" != \"$cur\" ] "
            f"&& [ \"$PWD/$r\" != \"$act\" ] && echo \"$r\"; "
            f"done | tail -n +{keep - 1} | xargs -r rm -rf --"], **as_site)

    unit = f"pm2-{user}"
    if not host.get_fact(File, path=f"/etc/systemd/system/{unit}.service"):
        server.shell(name=f"Install the {unit} boot unit (the site's own PM2 daemon)",
                     commands=[f"pm2 startup systemd -u {user} --hp {p['home']}", "systemctl daemon-reload"],
                     _env=NPM_ENV)
    systemd.service(name=f"Run {unit} now and at boot", service=unit, running=True, enabled=True)

    marker = f"{rel} {sha256_text(env_text + run_text + ecosystem_text + activate_text)[:16]}"
    active = host.get_fact(Command, command=f"cat {p['marker']} 2>/dev/null || true") or ""
    if active.strip() != marker:
        server.shell(name=f"Activate site release {key}: switch, reload its PM2, gate (under systemd-run)",
                     commands=[activation_command(p, rel, marker, gate_timeout)])


def _stop_a_site_turned_off() -> None:
    """The way back: a primary that ran the site and is deployed without SEATWATCH_SITE_SOURCE stops it (its
    builds stay on disk; Caddy no longer routes to it). Nothing at all on a host that never had it."""
    unit = f"pm2-{cfg('site_user')}"
    if is_primary() and host.get_fact(File, path=f"/etc/systemd/system/{unit}.service"):
        systemd.service(name=f"The site is off (no SEATWATCH_SITE_SOURCE): stop and disable {unit}", service=unit,
                        running=False, enabled=False)

