"""pm2: Node.js and PM2 running `web` (waitress) and `worker` (huey_consumer) as the app user.

`pm2 startup` installs the systemd unit pm2-<user> (it resurrects the saved process list at boot);
`pm2 save` records the list after every reload. PM2 reloads only when the release, the env file,
the run wrapper or the ecosystem file changed; then the health gate polls the local health
endpoint and, if the new release does not answer 200/503 in time, switches `current` back,
reloads again and fails the deploy with the reason.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, npm, server, systemd
from pyinfra.operations.util import any_changed

from roles.common import TEMPLATES, app_paths, cfg, is_primary

NPM_ENV = {"LC_ALL": "C.UTF-8"}  # npm facts misparse without a UTF-8 locale and reinstall every run


def _pm2_version() -> str:
    version = cfg("pm2_version")
    if version != "auto":
        return version
    distro = host.get_fact(LinuxDistribution)
    # Ubuntu 22.04 ships Node.js 12: PM2 6+ needs Node 16+, so stay on PM2 5 there.
    if (distro.get("name") or "").lower() == "ubuntu" and distro.get("major") == 22:
        return "5.4.3"
    return "7.0.4"


@deploy("PM2 processes")
def pm2(release: dict) -> None:
    p = app_paths()
    user = cfg("app_user")
    as_app = {"_sudo_user": user, "_use_sudo_login": True}
    primary = is_primary()

    apt.packages(name="Install Node.js and npm", packages=["nodejs", "npm"], no_recommends=True)
    npm.packages(name="Install PM2", packages=[f"pm2@{_pm2_version()}"], _env=NPM_ENV)

    ecosystem = files.template(
        name="Render the PM2 ecosystem file", src=str(TEMPLATES / "ecosystem.config.js.j2"),
        dest=p["ecosystem"], user=user, group=user, mode="644",
        run=p["run"], root=p["root"], web=primary, scheduler=primary, port=cfg("app_port"),
        kill_timeout=int(cfg("pm2_kill_timeout_ms")),
    )
    files.template(
        name="Rotate the PM2 logs", src=str(TEMPLATES / "pm2-logrotate.j2"),
        dest=f"/etc/logrotate.d/pm2-{user}", mode="644", user_name=user, home=p["home"],
    )

    gate = f"{p['root']}/bin/health-gate"
    if primary:
        files.template(
            name="Install the health gate", src=str(TEMPLATES / "health-gate.j2"), dest=gate,
            mode="755", url=f"http://127.0.0.1:{cfg('app_port')}/api/monitoring/health",
            timeout=int(cfg("app_health_timeout")), home=p["home"], current=p["current"],
            ecosystem=p["ecosystem"],
        )

    unit = f"pm2-{user}"
    if not host.get_fact(File, path=f"/etc/systemd/system/{unit}.service"):
        server.shell(name=f"Install the {unit} boot unit (pm2 startup)",
                     commands=[f"pm2 startup systemd -u {user} --hp {p['home']}", "systemctl daemon-reload"],
                     _env=NPM_ENV)
    systemd.service(name=f"Run {unit} now and at boot", service=unit, running=True, enabled=True)

    first_start = not host.get_fact(File, path=f"{p['home']}/.pm2/dump.pm2")
    reload_if = any_changed(ecosystem, *release["changed"])
    condition = {} if first_start else {"_if": reload_if}
    reload_op = server.shell(
        name="Start or reload web and worker, save the process list",
        commands=[f"pm2 startOrReload {p['ecosystem']} --update-env", "pm2 save --force"],
        **condition,
        **as_app,
    )
    if not primary:
        return

    timeout = int(cfg("app_health_timeout"))
    url = f"http://127.0.0.1:{cfg('app_port')}/api/monitoring/health"
    server.shell(name=f"Health gate: {url} must answer 200/503 within {timeout}s, else roll back",
                 commands=[f"{gate} {release['dir']} {release.get('previous') or ''}"],
                 _if=reload_op.did_change, **as_app)
