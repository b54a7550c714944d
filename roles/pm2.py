"""pm2: PM2 (on the Node.js of roles/node.py) running `web` (waitress) and `worker` (huey_consumer) as the app user.

`pm2 startup` installs the systemd unit pm2-<user> (it resurrects the saved process list at boot).

Activation (switch `current`, reload PM2, gate, roll back) is one step on the server,
/usr/local/lib/seatwatch/activate (root's, like everything it writes: roles/app.py): the module
roles/activation.py with its entry point and a JSON config of this deploy's paths, user and timeout
beside it (install_activation; the site's site-activate is the same module with its own config), started with
`systemd-run` so that it outlives the ssh session: a dropped connection cannot leave a switched but
ungated release. The deploy waits for it and prints its log. Whether to activate is decided by
comparing the marker the gate writes on success (/var/lib/seatwatch/active: release directory and
configuration hash) with what this deploy wants, not by what changed in this run, so a rerun after
an interrupted deploy finishes the job. The gate wants web's health answering 200/503 (primary), the
worker online in PM2 with a restart count that holds still, and a heartbeat from the new release's
worker process. Worker-only hosts are gated on the worker alone.

Stop bounds come from one figure, app.queue.worker.shutdown_timeout: PM2's kill_timeout for the worker is
above it, and the pm2-<user> unit's TimeoutStopSec above PM2 stopping web and the worker.
"""

from __future__ import annotations

import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import files, npm, server, systemd

from roles.common import (BIN_DIR, LOG_DIR, PROJECT, TEMPLATES, app_environment, app_paths, cfg, is_primary, render,
                          scheduler_enabled, sha256_text, site_enabled, stop_timeouts)
from roles.distro import node_plan

NPM_ENV = {"LC_ALL": "C.UTF-8"}  # npm facts misparse without a UTF-8 locale and reinstall every run
ACTIVATE_UNIT = "seatwatch-activate"


def _pm2_version() -> str:
    version = cfg("pm2_version")
    if version != "auto":
        return version
    # Ubuntu 22.04 ships Node.js 12: PM2 6+ needs Node 16+, so PM2 5 there unless the site brings a newer
    # Node.js (roles/distro.py node_plan; roles/node.py installs it)
    return node_plan(site_enabled()).pm2


def activation_running(prefix: str = ACTIVATE_UNIT) -> str:
    """A shell test: true while an activation unit (any seatwatch-activate-<n>) is running or stopping."""
    return (f"systemctl list-units --plain --no-legend --type=service --state=activating,active,deactivating "
            f"'{prefix}-*' | grep -q .")


def activation_command(p: dict, rel: str, marker: str, timeout: int) -> str:
    """Wait for an activation left running by a dropped connection, start this one as a transient
    unit (systemd-run: it survives the ssh session), wait for it, print its log, exit with its code.
    Each activation gets its own unit name (seatwatch-activate-<time>): systemd keeps a finished unit
    loaded until it has collected it, and refuses the same name until then.
    `p` needs "activate" and "activate_log" (app_paths(); scripts/ops.py's rollback passes its own).
    An activation that refused to start (its directories not root's) wrote no log: its journal is shown."""
    log = p["activate_log"]
    return (
        f"while {activation_running()}; do sleep 1; done; "
        f"unit={ACTIVATE_UNIT}-$(date +%s%N); rm -f {log}; "
        f"systemd-run --quiet --unit=$unit --collect --wait --property=TimeoutStartSec={timeout + 300} "
        f"/usr/bin/python3 {p['activate']} {shlex.quote(rel)} {shlex.quote(marker)}; rc=$?; "
        f"cat {log} 2>/dev/null || journalctl -q -o cat -u $unit --no-pager; exit $rc"
    )


def activation_config(p: dict, user: str, **kinds) -> dict:
    """The activation's config (roles/activation.py KEYS): the places of `p` (app_paths() or site_paths()),
    the user, and what differs between the app and the site (`kinds`)."""
    return {"user": user, "home": p["home"], "root": p["root"], "current": p["current"], "bin": BIN_DIR,
            "ecosystem": p["ecosystem"], "marker": p["marker"], "gated": p["gated"], "log": p["activate_log"],
            "audit": f"{LOG_DIR}/deploys.log", "timeout": int(cfg("app_health_timeout")), **kinds}


def install_activation(p: dict, config: dict, what: str, module: bool) -> str:
    """Upload the activation to root's directory: the module (with `module`: once per deploy, by the app's role),
    the entry point under p["activate"] and its config beside it. Returns the text the marker's hash covers,
    so a change to any of them activates again, and nothing else does."""
    source = PROJECT / "roles"
    module_text = (source / "activation.py").read_text()
    entry_text = (source / "activate_entry.py").read_text()
    config_text = json.dumps(config, indent=1, sort_keys=True) + "\n"
    if module:
        files.put(name="Install the activation module (switch, reload, gate, roll back)", src=StringIO(module_text),
                  dest=f"{BIN_DIR}/activation.py", user="root", group="root", mode="644")
    files.put(name=f"Install the activation entry point {p['activate']} ({what})", src=StringIO(entry_text), dest=p["activate"],
              user="root", group="root", mode="755")
    files.put(name=f"Install the activation config {p['activate']}.json ({what})", src=StringIO(config_text), dest=f"{p['activate']}.json",
              user="root", group="root", mode="644")
    return module_text + entry_text + config_text


@deploy("PM2 processes")
def pm2(release: dict) -> None:
    p = app_paths()
    user = cfg("app_user")
    primary = is_primary()
    timeouts = stop_timeouts(app_environment())

    npm.packages(name="Install PM2", packages=[f"pm2@{_pm2_version()}"], _env=NPM_ENV)

    ecosystem_text = render(
        "ecosystem.config.js.j2", run=p["run"], root=p["root"], web=primary, scheduler=scheduler_enabled(),
        port=cfg("app_port"), kill_timeout=timeouts["worker_kill_ms"], web_kill_timeout=timeouts["web_kill_ms"],
        consumer_timeout=timeouts["consumer_s"],
    )
    files.put(name="Install the PM2 ecosystem file", src=StringIO(ecosystem_text), dest=p["ecosystem"],
              user="root", group="root", mode="644")
    files.template(
        name="Rotate the PM2 logs", src=str(TEMPLATES / "pm2-logrotate.j2"),
        dest=f"/etc/logrotate.d/pm2-{user}", mode="644", user_name=user, home=p["home"],
    )
    gate_timeout = int(cfg("app_health_timeout"))
    config = activation_config(
        p, user, run=p["run"], audit_name="activate", label="release", failed="DEPLOY FAILED", stable_seconds=10,
        apps=["web", "worker"], process="worker", heartbeat=True, health_name="web health", health_host=None,
        # web's health: 200 healthy, 503 degraded by an outside problem (the scraper's breaker); none without web
        health_url=f"http://127.0.0.1:{cfg('app_port')}/api/monitoring/health" if primary else None,
        health_codes=[200, 503])
    activate_text = install_activation(p, config, "web and worker", module=True)

    unit = f"pm2-{user}"
    if not host.get_fact(File, path=f"/etc/systemd/system/{unit}.service"):
        server.shell(name=f"Install the {unit} boot unit (pm2 startup)",
                     commands=[f"pm2 startup systemd -u {user} --hp {p['home']}", "systemctl daemon-reload"],
                     _env=NPM_ENV)
    dropin = files.put(
        name=f"Let {unit} stop gracefully: TimeoutStopSec={timeouts['unit_stop_s']}",
        src=StringIO("# managed by pyinfra (roles/pm2.py): from app.queue.worker.shutdown_timeout "
                     f"({timeouts['consumer_s']} s) + PM2's margin + web's stop\n"
                     f"[Service]\nTimeoutStopSec={timeouts['unit_stop_s']}\n"),
        dest=f"/etc/systemd/system/{unit}.service.d/stop-timeout.conf", mode="644", create_remote_dir=True,
    )
    systemd.daemon_reload(name="Reload systemd (the stop timeout changed)", _if=dropin.did_change)
    systemd.service(name=f"Run {unit} now and at boot", service=unit, running=True, enabled=True)

    marker = f"{release['dir']} {sha256_text(release['config'] + ecosystem_text + activate_text)[:16]}"
    active = host.get_fact(Command, command=f"cat {p['marker']} 2>/dev/null || true") or ""
    if active.strip() != marker:
        server.shell(
            name=f"Activate release {release['id']}: switch, reload PM2, gate (activate under systemd-run)",
            commands=[activation_command(p, release["dir"], marker, gate_timeout)],
        )

