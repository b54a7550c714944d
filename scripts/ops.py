"""Operator commands, run from the laptop (the Makefile's deploy, logs, run, releases, rollback, lock).

    python scripts/ops.py deploy [--break-lock]   lock, `pyinfra -y inventory.py deploy.py`, audit line, unlock
    python scripts/ops.py logs                    PM2's logs of web and worker (and the site's, if deployed), following
    python scripts/ops.py run CMD...              `python -m app CMD` in the current release, as the app user
    python scripts/ops.py releases                the releases on the primary: current, gated, deployed when, commit
                                                  (then the site's builds, if the site is deployed)
    python scripts/ops.py rollback [RELEASE]      activate the previous (or the named) release: switch, reload, gate
    python scripts/ops.py rollback --site [KEY]   the same for the site (roles/site.py): its previous gated build
    python scripts/ops.py lock [status|break]     the deploy lock
    python scripts/ops.py status                  release, processes, the service's status, heartbeats, last deploys
    python scripts/ops.py audit [N]               the last N lines of the server's audit log
    python scripts/ops.py env                     the server's settings, secrets masked, each against the laptop's
    python scripts/ops.py restart [site]          web and worker (or the site) restarted, gated like a deploy
    python scripts/ops.py ssh                     a shell on the primary
    python scripts/ops.py logs [N] [--since T]    PM2's logs; with --since (10m, 2h, 1d, ISO) a window, not followed

Settings as for the deploy: deploy.env, secrets.env, the environment (roles/config.py). The commands
talk to the primary (SEATWATCH_HOST) over ssh with the same user, key, port and known-hosts file.
On the server (roles/app.py, "Who owns what"): the lock is /var/lib/seatwatch/deploy.lock (who, since,
from where), the audit log /var/log/seatwatch/deploys.log (one line per deploy and per activation), the
gate's marker /var/lib/seatwatch/active and the gated releases /var/lib/seatwatch/gated/<id>; `rollback`
runs root's /usr/local/lib/seatwatch/activate, never anything the app user can change.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from roles.config import SettingsFileError, load_settings_files  # noqa: E402

LOCK = "/var/lib/seatwatch/deploy.lock"
AUDIT = "/var/log/seatwatch/deploys.log"
ROOT = "/opt/seatwatch"
USER = "seatwatch"
# root's places, as roles/common.py names them (tests/test_deploy_config.py checks they agree)
BIN = "/usr/local/lib/seatwatch"
MARKER = "/var/lib/seatwatch/active"
GATED = "/var/lib/seatwatch/gated"
ACTIVATE_LOG = "/var/log/seatwatch/activate.log"
# the site's (roles/site.py site_paths, with the default SEATWATCH_SITE_USER and _ROOT)
SITE = {"root": "/opt/seatwatch-site", "user": "seatwatch-site", "marker": "/var/lib/seatwatch/site-active",
        "gated": "/var/lib/seatwatch/site-gated", "activate": f"{BIN}/site-activate",
        "activate_log": "/var/log/seatwatch/site-activate.log"}


def site_settings() -> dict[str, str]:
    return {**SITE, "root": env("SEATWATCH_SITE_ROOT", SITE["root"]), "user": env("SEATWATCH_SITE_USER", SITE["user"])}


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def ssh_cmd(remote: str, tty: bool = False) -> list[str]:
    host = env("SEATWATCH_HOST")
    if not host:
        raise SystemExit("set SEATWATCH_HOST (deploy.env or the environment)")
    cmd = ["ssh", "-o", "BatchMode=yes", "-p", env("SEATWATCH_SSH_PORT", "22")]
    if tty:
        cmd.append("-t")
    if env("SEATWATCH_SSH_KEY"):
        cmd += ["-i", os.path.expanduser(env("SEATWATCH_SSH_KEY"))]
    if env("SEATWATCH_SSH_KNOWN_HOSTS"):
        cmd += ["-o", f"UserKnownHostsFile={os.path.expanduser(env('SEATWATCH_SSH_KNOWN_HOSTS'))}",
                "-o", "StrictHostKeyChecking=yes"]
    return [*cmd, f"{env('SEATWATCH_SSH_USER', 'ubuntu')}@{host}", remote]


def ssh(remote: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(ssh_cmd(remote), capture_output=capture, text=True)
    if check and cp.returncode != 0:
        raise SystemExit(f"on the server: {remote!r} failed: {(cp.stderr or '').strip()}")
    return cp


def operator() -> str:
    try:
        email = subprocess.run(["git", "-C", str(PROJECT), "config", "user.email"], capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        email = ""
    return email or f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- lock

def lock_status() -> str:
    return ssh(f"sudo cat {LOCK} 2>/dev/null || true").stdout.strip()


def take_lock(who: str, break_lock: bool) -> None:
    if break_lock:
        held = lock_status()
        if held:
            print(f"breaking the deploy lock held by: {held}", file=sys.stderr)
        ssh(f"sudo rm -f {LOCK}")
    # noclobber: creating the file is the atomic test-and-set
    cp = ssh(f"sudo mkdir -p {os.path.dirname(LOCK)} && sudo sh -c 'set -C; printf \"%s\\n\" \"$1\" > {LOCK}' _ "
             f"{shlex.quote(who)}", check=False)
    if cp.returncode != 0:
        raise SystemExit(f"deploy stopped: another deploy holds the lock: {lock_status()}\n"
                         "If that deploy is gone, break the lock: make deploy BREAK_LOCK=1 "
                         "(or python scripts/ops.py lock break)")


def release_lock(who: str) -> None:
    # only our own lock: a breaker's lock stays
    ssh(f"sudo sh -c 'grep -qxF \"$1\" {LOCK} && rm -f {LOCK}' _ {shlex.quote(who)}", check=False)


def audit(line: str) -> None:
    ssh(f"sudo mkdir -p {os.path.dirname(AUDIT)} && printf '%s\\n' {shlex.quote(line)} | "
        f"sudo tee -a {AUDIT} >/dev/null", check=False)


# --------------------------------------------------------------------------- commands

def cmd_deploy(args: list[str]) -> int:
    from roles.common import release_bundle

    break_lock = "--break-lock" in args
    release_id = release_bundle()[0]
    who = f"{operator()} since {now()} (pid {os.getpid()} on {socket.gethostname()}, release {release_id})"
    take_lock(who, break_lock)
    rc = 1
    try:
        rc = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "-y", "inventory.py", "deploy.py"],
                            cwd=PROJECT).returncode
    finally:
        result = "ok" if rc == 0 else f"failed (exit {rc})"
        audit(f"{now()} deploy operator={operator()} release={release_id} result={result}")
        release_lock(who)
    return rc


def cmd_lock(args: list[str]) -> int:
    if args[:1] == ["break"]:
        print(f"removing: {lock_status() or '(no lock)'}")
        ssh(f"sudo rm -f {LOCK}")
        return 0
    print(lock_status() or "no deploy holds the lock")
    return 0


def cmd_logs(args: list[str]) -> int:
    if "--since" in args:  # a window of the past, not followed (scripts/opsview.py)
        import opsview

        i = args.index("--since")
        rest = args[:i] + args[i + 2:]
        return opsview.logs_since(args[i + 1], int(rest[0]) if rest and rest[0] else 200)
    lines = int(args[0]) if args and args[0] else 50
    backend = f"sudo -u {USER} -H env PM2_HOME=/home/{USER}/.pm2 pm2 logs --lines {lines}"
    site = site_settings()["user"]
    # the site's PM2 (its own daemon and user) beside the backend's, when the site is deployed
    remote = (f"if [ -d /var/lib/{site}/.pm2 ]; then sudo -u {site} -H env PM2_HOME=/var/lib/{site}/.pm2 "
              f"pm2 logs --lines {lines} & fi; {backend}")
    return subprocess.run(ssh_cmd(remote, tty=True)).returncode


def cmd_run(args: list[str]) -> int:
    if not args:
        raise SystemExit('usage: make run CMD="dead-letters"')
    words = shlex.split(" ".join(args)) if len(args) == 1 else args
    remote = f"sudo -u {USER} -H {BIN}/run " + " ".join(shlex.quote(w) for w in words)
    return subprocess.run(ssh_cmd(remote)).returncode


RELEASES_SCRIPT = r"""
cur=$(readlink ROOT/current); gated=$(cut -d' ' -f1 MARKER 2>/dev/null)
cd ROOT/releases || exit 0
for r in $(ls -1t); do
  [ -f "$r/.complete" ] || continue
  flags=""; [ "ROOT/releases/$r" = "$cur" ] && flags="current"
  [ "ROOT/releases/$r" = "$gated" ] && flags="$flags,active"
  [ -f "GATED/$r" ] && flags="$flags,gated" || flags="$flags,never-gated"
  printf '%s\t%s\t%s\n' "$r" "$(date -u -r "$r/.complete" +%Y-%m-%dT%H:%M:%SZ)" "${flags#,}"
done
"""


def list_releases(site: bool = False) -> list[tuple[str, str, str]]:
    root, marker, gated = (ROOT, MARKER, GATED) if not site else (
        site_settings()["root"], SITE["marker"], SITE["gated"])
    out = ssh(RELEASES_SCRIPT.replace("ROOT", root).replace("MARKER", marker).replace("GATED", gated)).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def cmd_releases(args: list[str]) -> int:
    rows = list_releases()
    if not rows:
        print("no releases on the server")
        return 0
    print(f"{'release (git commit)':<34} {'deployed (UTC)':<22} state (active: passed the gate and runs now)")
    for rid, when, flags in rows:
        print(f"{rid:<34} {when:<22} {flags}")
    site_rows = list_releases(site=True)
    if site_rows:
        print(f"\n{'site build (key)':<34} {'deployed (UTC)':<22} state (make rollback SITE=1 [RELEASE=key])")
        for rid, when, flags in site_rows:
            print(f"{rid:<34} {when:<22} {flags}")
    return 0


def cmd_rollback(args: list[str], kind: str = "rollback") -> int:
    """`kind` names it in the audit log (restart: the current release activated again)."""
    if args[:1] == ["--site"]:
        return rollback_site(args[1:], kind)
    rows = list_releases()
    cur = next((r for r, _, f in rows if "current" in f), None)
    target = args[0] if args and args[0] else next(
        (r for r, _, f in rows if r != cur and "never-gated" not in f), None)
    if not target or target not in {r for r, _, _ in rows}:
        raise SystemExit(f"no such release to roll back to: {target!r} (make releases lists them)")
    marker = ssh(f"cat {MARKER} 2>/dev/null || true").stdout.split()
    config_hash = marker[1] if len(marker) > 1 else "manual"
    rel = f"{ROOT}/releases/{target}"
    print(f"activating {target} (was {cur}): switch, reload, gate")
    from roles.pm2 import activation_command

    timeout = int(env("SEATWATCH_HEALTH_TIMEOUT", "90"))
    command = activation_command({"activate": f"{BIN}/activate", "activate_log": ACTIVATE_LOG}, rel,
                                 f"{rel} {config_hash}", timeout)
    remote = f"sudo sh -c {shlex.quote(command)}"
    rc = subprocess.run(ssh_cmd(remote)).returncode
    audit(f"{now()} {kind} operator={operator()} release={target} result={'ok' if rc == 0 else 'failed'}")
    return rc


def rollback_site(args: list[str], kind: str = "rollback") -> int:
    """The site's previous gated build (or the named one), through root's site-activate: switch, reload, gate."""
    rows = list_releases(site=True)
    cur = next((r for r, _, f in rows if "current" in f), None)
    target = args[0] if args and args[0] else next(
        (r for r, _, f in rows if r != cur and "never-gated" not in f), None)
    if not target or target not in {r for r, _, _ in rows}:
        raise SystemExit(f"no such site build to roll back to: {target!r} (make releases lists them)")
    marker = ssh(f"cat {SITE['marker']} 2>/dev/null || true").stdout.split()
    config_hash = marker[1] if len(marker) > 1 else "manual"
    rel = f"{site_settings()['root']}/releases/{target}"
    print(f"activating site build {target} (was {cur}): switch, reload, gate")
    from roles.pm2 import activation_command

    timeout = int(env("SEATWATCH_HEALTH_TIMEOUT", "90"))
    command = activation_command(SITE, rel, f"{rel} {config_hash}", timeout)
    rc = subprocess.run(ssh_cmd(f"sudo sh -c {shlex.quote(command)}")).returncode
    audit(f"{now()} {kind} operator={operator()} site={target} result={'ok' if rc == 0 else 'failed'}")
    return rc


def cmd_cutover_check(args: list[str]) -> int:
    cmd = [sys.executable, "-m", "app", "cutover-check", "--host", env("SEATWATCH_HOST"),
           "--domain", env("SEATWATCH_CHECK_DOMAIN") or env("SEATWATCH_DOMAIN"),
           "--ssh-user", env("SEATWATCH_SSH_USER", "ubuntu"), "--ssh-port", env("SEATWATCH_SSH_PORT", "22")]
    if env("SEATWATCH_SSH_KEY"):
        cmd += ["--ssh-key", os.path.expanduser(env("SEATWATCH_SSH_KEY"))]
    if env("SEATWATCH_SSH_KNOWN_HOSTS"):
        cmd += ["--known-hosts", os.path.expanduser(env("SEATWATCH_SSH_KNOWN_HOSTS"))]
    return subprocess.run([*cmd, *args], cwd=PROJECT).returncode


COMMANDS = {"cutover-check": cmd_cutover_check, "deploy": cmd_deploy, "lock": cmd_lock, "logs": cmd_logs, "run": cmd_run,
            "releases": cmd_releases, "rollback": cmd_rollback}


def main(argv: list[str]) -> int:
    import opsview  # status, audit, env, restart, ssh: the one look at the server

    COMMANDS.update(opsview.COMMANDS)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    try:
        sources = load_settings_files()
    except SettingsFileError as exc:
        raise SystemExit(f"deploy stopped: {exc}") from None
    if argv[0] == "deploy":  # every settings problem at once, before the lock's ssh or pyinfra's
        from roles import preflight

        found = preflight.problems(os.environ, {n: s for n, s in sources.items() if s != "environment"})
        for line in found:
            print(f"deploy stopped: {line}", file=sys.stderr)
        if found:
            return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
