"""app: a release per deploy beside the previous ones, its virtualenv, the env file, migrations.

Who owns what (root never executes or writes anything the app user can change; docs/deploy.md):

    /opt/seatwatch/                   root:root 0755 (the deploy owns it: anything else found here is removed)
      releases/ (app user)            <id>/ src/ venv/ release.env (SEATWATCH_RELEASE=<id>) .complete
      current -> releases/<id>        root's link, switched only by the activation (pm2 role)
    /usr/local/lib/seatwatch/         root:root 0755: run (exec wrapper), activate (+ activate.json, activation.py),
                                      ecosystem.config.js
    /etc/seatwatch/app.env            root:<app user> 0640: the service's environment (the app user reads it)
    /var/lib/seatwatch/               root: active (the gate's marker), gated/<id>, deploy.lock, uploads/
    /var/log/seatwatch/               root: activate.log, deploys.log (audit)

The app user writes only its releases (built as that user: unpack, venv, pip, migrations) and its home
(PM2's logs). The release tarball is uploaded into root's uploads/ and unpacked from there by the app user.
The app reads only os.environ; PM2 starts `run web|worker`, which exports app.env and execs Python, so
secrets live in one file and never in PM2's dump or the ecosystem file. The env file is written through
stdin with umask 027 (never readable by others, not even as a temporary file) and compared by hash (so
`pyinfra --diff` shows nothing of it). Dependencies come from requirements.lock (hashes required).

A host deployed before this layout (app-owned /opt/seatwatch with bin/ and shared/) is taken back on the
first deploy: /opt/seatwatch becomes root's, everything in it but releases/ and `current` is removed, and
the releases that had passed the gate are carried over into gated/.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import files, pip, server

from roles.common import (ENV_DIR, app_environment, app_paths, cfg, python_for_host, release_bundle, render,
                          sha256_text)


@deploy("App release")
def app() -> dict:
    """Returns what the pm2 role needs: the release, and a hash of the configuration it runs with."""
    env = app_environment()  # fails early, naming every missing variable
    p = app_paths()
    user = cfg("app_user")
    as_app = {"_sudo_user": user, "_use_sudo_login": True}
    release_id, bundle = release_bundle()
    rel = f"{p['releases']}/{release_id}"

    for path in (p["bin"], p["state"], p["gated"], p["uploads"], p["logs"], ENV_DIR):
        files.directory(name=f"Root's directory {path}", path=path, user="root", group="root", mode="755")
    _take_back_the_app_root(p, user)
    env_text = render("app.env.j2", env=env)
    if host.get_fact(Sha256File, path=p["env_file"]) != sha256_text(env_text):
        f = p["env_file"]
        server.shell(
            name="Write the env file (root:app 0640 from creation; contents not shown)",
            commands=[f"umask 077 && cat > {f}.new && chgrp {user} {f}.new && chmod 640 {f}.new && mv -f {f}.new {f}"],
            _stdin=env_text,
        )
    runner_text = render("run.j2", root=p["root"], env_file=p["env_file"])
    files.put(name="Install the run wrapper", src=_io(runner_text), dest=p["run"], user="root", group="root",
              mode="755")

    if not host.get_fact(File, path=f"{rel}/.complete"):
        upload = f"{p['uploads']}/{release_id}.tar.gz"
        files.put(name=f"Upload the sources of release {release_id}", src=str(bundle), dest=upload,
                  user="root", group="root", mode="644")
        server.shell(name="Unpack the sources (as the app user)", commands=[
            f"rm -rf {rel} && mkdir -m 755 {rel} {rel}/src && tar -xzf {upload} -C {rel}/src",
            f"printf 'SEATWATCH_RELEASE=%s\\n' {release_id} > {rel}/release.env"],
            **as_app)
        pip.venv(name="Create the release's virtualenv", path=f"{rel}/venv", python=python_for_host()[0],
                 **as_app)
        pip_install = f"{rel}/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check"
        server.shell(name="Install the locked dependencies, then the release itself", commands=[
            f"{pip_install} --require-hashes -r {rel}/src/requirements.lock",
            f"{pip_install} --no-deps {rel}/src"],
            **as_app)
        migrate = "migrate --bootstrap" if cfg("app_bootstrap_schema") else "migrate"
        server.shell(name=f"Run the migrations ({migrate})",
                     commands=[f"SEATWATCH_RELEASE_DIR={rel} {p['run']} {migrate}"], **as_app)
        server.shell(name="Mark the release complete", commands=[f": > {rel}/.complete"], **as_app)
        server.shell(name="Remove the uploaded sources", commands=[f"rm -f {p['uploads']}/*.tar.gz"])
        keep = max(int(cfg("app_keep_releases")), 2)
        server.shell(
            name=f"Keep the {keep} newest releases (never the current or the active one; as the app user)",
            commands=[
                f"cur=$(readlink {p['current']} || true); act=$(cut -d' ' -f1 {p['marker']} 2>/dev/null || true); "
                f"cd {p['releases']} && ls -1t | while read -r r; do "
                f"[ -d \"$r\" ] && [ \"$PWD/$r\" != \"{rel}\" ] && [ \"$PWD/$r\" != \"$cur\" ] "
                f"&& [ \"$PWD/$r\" != \"$act\" ] && echo \"$r\"; "
                f"done | tail -n +{keep - 1} | xargs -r rm -rf --"
            ],
            **as_app,
        )
    return {
        "id": release_id,
        "dir": rel,
        "config": sha256_text(env_text + runner_text),
    }


# What /opt/seatwatch should be: root's, holding only the app user's releases/ and root's `current` link.
_ROOT_PROBLEMS = r"""
cd {root} 2>/dev/null || {{ echo missing; exit 0; }}
[ "$(stat -c '%u %g %a' .)" = "0 0 755" ] || echo "owner"
for e in * .[!.]* ..?*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  case "$e" in
    releases) [ -d releases ] && [ ! -L releases ] && [ "$(stat -c %U releases)" = "{user}" ] || echo releases ;;
    current) [ -L current ] || echo current ;;
    *) echo "stray $e" ;;
  esac
done
[ -d releases ] || echo "no releases"
"""
_ROOT_FIX = r"""
mkdir -p {root} && chown root:root {root} && chmod 755 {root} && cd {root} || exit 1
for e in * .[!.]* ..?*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  case "$e" in
    releases) if [ -L releases ] || [ ! -d releases ]; then rm -rf -- releases; fi ;;
    current) [ -L current ] || rm -rf -- current ;;
    *) rm -rf -- "$e" ;;
  esac
done
[ -d releases ] || mkdir releases
chown -h {user}: releases && chmod 755 releases
"""
# Releases that passed the gate under the old layout (a .gated file in the release) stay rollback targets.
_CARRY_OVER_GATED = r"""
for d in {releases}/*/; do
  n=$(basename "$d"); f="$d.gated"
  if [ -f "$f" ] && [ ! -L "$f" ]; then : > "{gated}/$n"; fi
done
"""


def _take_back_the_app_root(p: dict, user: str) -> None:
    """Make /opt/seatwatch root's (the app user keeps releases/), removing the old app-owned bin/ and shared/.
    Run once root's own directories exist; a no-op (no operation) on a host already in shape."""
    problems = host.get_fact(Command, command=_ROOT_PROBLEMS.format(root=p["root"], user=user)) or ""
    if not problems.strip():
        return
    fresh = problems.strip() == "missing"
    server.shell(name=f"Take {p['root']} back for root: releases/ for {user}, nothing else it can write",
                 commands=[_ROOT_FIX.format(root=p["root"], user=user)])
    if not fresh:
        server.shell(name="Carry the gated releases over to root's list",
                     commands=[_CARRY_OVER_GATED.format(releases=p["releases"], gated=p["gated"])])


def _io(text: str):
    from io import StringIO

    return StringIO(text)
