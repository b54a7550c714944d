"""app: a release per deploy beside the previous ones, its virtualenv, the env file, migrations.

    /opt/seatwatch/
      releases/<id>/       id names the git commit (see roles/common.release_bundle); a rerun uploads nothing
        source.tar.gz  src/  venv/  release.env (SEATWATCH_RELEASE=<id>)  .complete
      current -> releases/<id>          switched by bin/activate (pm2 role), never by an ssh command
      shared/ (0700)                    app.env (0600, the service's environment), active (the gate's marker),
                                        activate.log, deploys.log (audit), deploy.lock
      bin/run                           exec wrapper: loads app.env and the release's release.env,
                                        runs `python -m app ...` of a release

The app reads only os.environ; PM2 starts `bin/run web|worker`, which exports app.env and execs
Python, so secrets live in one 0600 file and never in PM2's dump or the ecosystem file.
The env file is written through stdin with umask 077 (it never exists with another mode, not even as
a temporary file) and compared by hash (so `pyinfra --diff` shows nothing of it).
Dependencies come from requirements.lock (hashes required): every host and rollback gets the same versions.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import files, pip, server

from roles.common import (app_environment, app_paths, cfg, python_for_host, release_bundle, render,
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

    for path, mode in ((p["root"], "755"), (p["releases"], "755"), (p["shared"], "700"),
                       (f"{p['root']}/bin", "755")):
        files.directory(name=f"Directory {path}", path=path, user=user, group=user, mode=mode)
    env_text = render("app.env.j2", env=env)
    if host.get_fact(Sha256File, path=p["env_file"]) != sha256_text(env_text):
        f = p["env_file"]
        server.shell(
            name="Write the env file (0600 from creation; contents not shown)",
            commands=[f"umask 077 && cat > {f}.new && chown {user}:{user} {f}.new && mv -f {f}.new {f}"],
            _stdin=env_text,
        )
    runner_text = render("run.j2", root=p["root"], env_file=p["env_file"])
    files.put(name="Install the run wrapper", src=_io(runner_text), dest=p["run"], user="root", group="root",
              mode="755")

    if not host.get_fact(File, path=f"{rel}/.complete"):
        files.directory(name=f"Release directory {release_id}", path=rel, user=user, group=user, mode="755")
        files.put(name=f"Upload the sources of release {release_id}", src=str(bundle),
                  dest=f"{rel}/source.tar.gz", user=user, group=user, mode="644")
        server.shell(name="Unpack the sources", commands=[
            f"rm -rf {rel}/src {rel}/venv && mkdir {rel}/src && tar -xzf {rel}/source.tar.gz -C {rel}/src",
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
        files.file(name="Mark the release complete", path=f"{rel}/.complete", user=user, group=user, mode="644")
        keep = max(int(cfg("app_keep_releases")), 2)
        server.shell(
            name=f"Keep the {keep} newest releases (never the current or the active one)",
            commands=[
                f"cur=$(readlink {p['current']} || true); act=$(cut -d' ' -f1 {p['shared']}/active 2>/dev/null || true); "
                f"cd {p['releases']} && ls -1t | while read -r r; do "
                f"[ -d \"$r\" ] && [ \"$PWD/$r\" != \"{rel}\" ] && [ \"$PWD/$r\" != \"$cur\" ] "
                f"&& [ \"$PWD/$r\" != \"$act\" ] && echo \"$r\"; "
                f"done | tail -n +{keep - 1} | xargs -r rm -rf --"
            ],
        )
    return {
        "id": release_id,
        "dir": rel,
        "config": sha256_text(env_text + runner_text),
    }


def _io(text: str):
    from io import StringIO

    return StringIO(text)
