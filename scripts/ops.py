"""Operator commands, run from the laptop: the Makefile's deploy, logs, run, releases, rollback, lock, status,
audit, env, restart, ssh and cutover-check targets (`python scripts/ops.py --help`, `... COMMAND --help`).

    deploy [--break-lock]         lock, `pyinfra -y inventory.py deploy.py`, audit line, unlock
    logs [N] [--since T]          PM2's logs (the site's too), following; with --since a window, not followed
    run CMD...                    `python -m app CMD` in the current release, as the app user
    releases                      the releases on the primary (current, active, gated, when), the site's builds
    rollback [--site] [RELEASE]   activate the previous gated (or the named) release: switch, reload, gate
    lock [status|break]           the deploy lock
    status | audit [N] | env | restart [site] | ssh      the one look at the server (scripts/opsview.py)

Settings as for the deploy: deploy.env, secrets.env, the environment (roles/config.py). The commands
talk to the primary (SEATWATCH_HOST) over ssh with the same user, key, port and known-hosts file.
On the server (roles/app.py, "Who owns what"): the lock is /var/lib/seatwatch/deploy.lock (who, since,
from where), the audit log /var/log/seatwatch/deploys.log (one line per deploy and per activation);
`releases` and `rollback` run root's /usr/local/lib/seatwatch/activate (or site-activate: roles/activation.py),
which knows its marker and gated releases from its own config, never anything the app user can change.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from roles.config import SettingsFileError, load_settings_files  # noqa: E402

LOCK = "/var/lib/seatwatch/deploy.lock"
AUDIT = "/var/log/seatwatch/deploys.log"
ROOT = "/opt/seatwatch"
USER = "seatwatch"
# root's places, as roles/common.py names them (tests/test_root_files.py checks they agree)
BIN = "/usr/local/lib/seatwatch"
MARKER = "/var/lib/seatwatch/active"
ACTIVATE_LOG = "/var/log/seatwatch/activate.log"
# the site's (roles/site.py site_paths, with the default SEATWATCH_SITE_USER and _ROOT)
SITE = {"root": "/opt/seatwatch-site", "user": "seatwatch-site", "activate": f"{BIN}/site-activate",
        "activate_log": "/var/log/seatwatch/site-activate.log"}


def site_settings() -> dict[str, str]:
    return {**SITE, "root": env("SEATWATCH_SITE_ROOT", SITE["root"]), "user": env("SEATWATCH_SITE_USER", SITE["user"])}


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


# Plain OpenSSH, beside pyinfra's connector, on purpose: these are one-shot commands whose output the operator
# reads (or a terminal: `make ssh`, `make logs` following), and pyinfra's connector runs operations and facts,
# with no interactive shell or streamed tty. Same user, port, key and known-hosts file as the deploy's.
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

def cmd_deploy(args: argparse.Namespace) -> int:
    from roles.common import release_bundle

    break_lock = args.break_lock
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


def cmd_lock(args: argparse.Namespace) -> int:
    if args.action == "break":
        print(f"removing: {lock_status() or '(no lock)'}")
        ssh(f"sudo rm -f {LOCK}")
        return 0
    print(lock_status() or "no deploy holds the lock")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.since:  # a window of the past, not followed (scripts/opsview.py)
        import opsview

        return opsview.logs_since(args.since, args.lines or 200)
    lines = args.lines or 50
    backend = f"sudo -u {USER} -H env PM2_HOME=/home/{USER}/.pm2 pm2 logs --lines {lines}"
    site = site_settings()["user"]
    # the site's PM2 (its own daemon and user) beside the backend's, when the site is deployed
    remote = (f"if [ -d /var/lib/{site}/.pm2 ]; then sudo -u {site} -H env PM2_HOME=/var/lib/{site}/.pm2 "
              f"pm2 logs --lines {lines} & fi; {backend}")
    return subprocess.run(ssh_cmd(remote, tty=True)).returncode


def cmd_run(args: argparse.Namespace) -> int:
    words = shlex.split(args.words[0]) if len(args.words) == 1 else args.words  # make run CMD="a b" is one word
    if not words:
        raise SystemExit('usage: make run CMD="dead-letters"')
    remote = f"sudo -u {USER} -H {BIN}/run " + " ".join(shlex.quote(w) for w in words)
    return subprocess.run(ssh_cmd(remote)).returncode


@dataclass(frozen=True)
class Place:
    """What `releases` and `rollback` talk about: the backend's releases or the site's builds. The
    activation's entry point knows the rest (its root, marker, gated list) from its config on the server."""

    what: str  # in messages
    audit_key: str  # in the audit line: release=<id> or site=<key>
    activate: str
    activate_log: str


APP = Place("release", "release", f"{BIN}/activate", ACTIVATE_LOG)
SITE_PLACE = Place("site build", "site", SITE["activate"], SITE["activate_log"])


def list_releases(place: Place = APP) -> dict:
    """{"active", "dir", "releases": [{"release", "deployed", "flags"}]} from root's activation (`activate
    releases`, roles/activation.py): it reads its own config, so no path is pasted into a remote script.
    A place never deployed (no config beside the entry point) has no releases."""
    entry = shlex.quote(place.activate)
    out = ssh(f"if [ -e {entry}.json ]; then /usr/bin/python3 {entry} releases; else echo '{{}}'; fi").stdout
    try:
        listing = json.loads(out)
    except ValueError:
        raise SystemExit(f"on the server: {place.activate} releases printed no JSON: {out[:200]!r}") from None
    return {"active": "", "dir": "", "releases": [], **listing}


def flags(row: dict) -> list[str]:
    return row["flags"].split(",")


def current_of(listing: dict) -> str | None:
    return next((r["release"] for r in listing["releases"] if "current" in flags(r)), None)


def cmd_releases(args: argparse.Namespace) -> int:
    rows = list_releases(APP)["releases"]
    if not rows:
        print("no releases on the server")
        return 0
    print(f"{'release (git commit)':<34} {'deployed (UTC)':<22} state (active: passed the gate and runs now)")
    for r in rows:
        print(f"{r['release']:<34} {r['deployed']:<22} {r['flags']}")
    site_rows = list_releases(SITE_PLACE)["releases"]
    if site_rows:
        print(f"\n{'site build (key)':<34} {'deployed (UTC)':<22} state (make rollback SITE=1 [RELEASE=key])")
        for r in site_rows:
            print(f"{r['release']:<34} {r['deployed']:<22} {r['flags']}")
    return 0


def rollback(place: Place, release: str | None = None, kind: str = "rollback") -> int:
    """Activate the named release of `place`, or its newest gated one that is not current, through root's
    activation: switch, reload, gate. `kind` names it in the audit log (restart: the current one again)."""
    listing = list_releases(place)
    cur = current_of(listing)
    target = release or next((r["release"] for r in listing["releases"]
                              if r["release"] != cur and "gated" in flags(r)), None)
    if not target or target not in {r["release"] for r in listing["releases"]}:
        raise SystemExit(f"no such {place.what} to roll back to: {target!r} (make releases lists them)")
    active = listing["active"].split()
    config_hash = active[1] if len(active) > 1 else "manual"
    rel = f"{listing['dir']}/{target}"
    print(f"activating {place.what} {target} (was {cur}): switch, reload, gate")
    from roles.pm2 import activation_command

    timeout = int(env("SEATWATCH_HEALTH_TIMEOUT", "90"))
    command = activation_command({"activate": place.activate, "activate_log": place.activate_log}, rel,
                                 f"{rel} {config_hash}", timeout)
    rc = subprocess.run(ssh_cmd(f"sudo sh -c {shlex.quote(command)}")).returncode
    audit(f"{now()} {kind} operator={operator()} {place.audit_key}={target} result={'ok' if rc == 0 else 'failed'}")
    return rc


def cmd_rollback(args: argparse.Namespace) -> int:
    return rollback(SITE_PLACE if args.site else APP, args.release)


def cmd_cutover_check(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "app", "cutover-check", "--host", env("SEATWATCH_HOST"),
           "--domain", env("SEATWATCH_CHECK_DOMAIN") or env("SEATWATCH_DOMAIN"),
           "--ssh-user", env("SEATWATCH_SSH_USER", "ubuntu"), "--ssh-port", env("SEATWATCH_SSH_PORT", "22")]
    if env("SEATWATCH_SSH_KEY"):
        cmd += ["--ssh-key", os.path.expanduser(env("SEATWATCH_SSH_KEY"))]
    if env("SEATWATCH_SSH_KNOWN_HOSTS"):
        cmd += ["--known-hosts", os.path.expanduser(env("SEATWATCH_SSH_KNOWN_HOSTS"))]
    return subprocess.run([*cmd, *args.extra], cwd=PROJECT).returncode


def parser() -> argparse.ArgumentParser:
    """The commands and their arguments (the Makefile's targets call them; `ops.py COMMAND --help`)."""
    import opsview  # status, audit, env, restart, ssh: the one look at the server

    top = argparse.ArgumentParser(prog="scripts/ops.py", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="Settings as for the deploy: deploy.env, secrets.env, the environment.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=func)
        return p

    command("deploy", cmd_deploy, "lock, `pyinfra -y inventory.py deploy.py`, audit line, unlock").add_argument(
        "--break-lock", action="store_true", help="remove another deploy's lock first (it is named)")
    p = command("logs", cmd_logs, "PM2's logs of web and worker (and the site's), following; "
                                  "with --since a window of the past, not followed")
    p.add_argument("lines", nargs="?", type=int, help="lines per log (default 50; 200 with --since)")
    p.add_argument("--since", metavar="WHEN", help="10m, 2h, 1d or an ISO time (UTC)")
    command("run", cmd_run, "`python -m app COMMAND` in the current release, as the app user").add_argument(
        "words", nargs=argparse.REMAINDER, metavar="CMD", help='one quoted string (make run CMD="dead-letters --drop 3") or words')
    command("releases", cmd_releases, "the releases on the primary (current, active, gated, deployed when), "
                                      "then the site's builds")
    p = command("rollback", cmd_rollback, "activate the previous gated (or the named) release: switch, reload, gate")
    p.add_argument("--site", action="store_true", help="the site's builds (roles/site.py), not the backend's")
    p.add_argument("release", nargs="?", help="a release id (or site build key) of `releases`")
    command("lock", cmd_lock, "the deploy lock: who holds it, or break it").add_argument(
        "action", nargs="?", choices=("status", "break"), default="status")
    command("cutover-check", cmd_cutover_check, "the cutover's checks against the host (python -m app "
                                                "cutover-check)").add_argument("extra", nargs=argparse.REMAINDER)
    command("status", opsview.cmd_status, "release, processes, the service's status, heartbeats, last deploys; "
                                          "exit 1 unless healthy")
    command("audit", opsview.cmd_audit, "the last lines of the server's audit log").add_argument(
        "lines", nargs="?", type=int, default=20)
    command("env", opsview.cmd_env, "the server's settings, secrets masked, each against the laptop's")
    command("restart", opsview.cmd_restart, "web and worker (or the site) restarted, gated like a deploy").add_argument(
        "app", nargs="?", choices=("site",), help="site: the site's PM2 instead of web and worker")
    command("ssh", opsview.cmd_ssh, "a shell on the primary")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        sources = load_settings_files()
    except SettingsFileError as exc:
        raise SystemExit(f"deploy stopped: {exc}") from None
    if args.command == "deploy":  # every settings problem at once, before the lock's ssh or pyinfra's
        from roles import preflight

        found = preflight.problems(os.environ, {n: s for n, s in sources.items() if s != "environment"})
        for line in found:
            print(f"deploy stopped: {line}", file=sys.stderr)
        if found:
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
