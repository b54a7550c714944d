"""app: a release per deploy beside the previous ones, its virtualenv, the env file, migrations, `current`.

    /opt/seatwatch/
      releases/<id>/       id = hash of the uploaded sources (same sources, same id: a rerun uploads nothing)
        source.tar.gz  src/  venv/  .complete
      current -> releases/<id>          switched atomically (ln -s + mv -T) after migrations succeed
      shared/app.env                    the service's environment, 0600, owned by the app user
      bin/run                           exec wrapper: loads app.env, runs `python -m app ...` of a release
      ecosystem.config.js               (pm2 role)

The app reads only os.environ; PM2 starts `bin/run web|worker`, which exports app.env and execs
Python, so secrets live in one 0600 file and never in PM2's dump or the ecosystem file.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, Link
from pyinfra.operations import files, pip, server

from roles.common import TEMPLATES, app_environment, app_paths, cfg, python_for_host, release_bundle


@deploy("App release")
def app() -> dict:
    """Returns what the pm2 role needs: the release, the previous one, and the ops whose change means reload."""
    env = app_environment()  # fails early, naming every missing variable
    p = app_paths()
    user = cfg("app_user")
    as_app = {"_sudo_user": user, "_use_sudo_login": True}
    release_id, bundle = release_bundle()
    rel = f"{p['releases']}/{release_id}"

    for path in (p["root"], p["releases"], p["shared"], f"{p['root']}/bin"):
        files.directory(name=f"Directory {path}", path=path, user=user, group=user, mode="755")
    env_file = files.template(
        name="Render the env file (0600)", src=str(TEMPLATES / "app.env.j2"), dest=p["env_file"],
        user=user, group=user, mode="600", env=env,
    )
    runner = files.template(
        name="Install the run wrapper", src=str(TEMPLATES / "run.j2"), dest=p["run"],
        user="root", group="root", mode="755", root=p["root"], env_file=p["env_file"],
    )

    new_release = None
    if not host.get_fact(File, path=f"{rel}/.complete"):
        files.directory(name=f"Release directory {release_id}", path=rel, user=user, group=user, mode="755")
        files.put(name=f"Upload the sources of release {release_id}", src=str(bundle),
                  dest=f"{rel}/source.tar.gz", user=user, group=user, mode="644")
        server.shell(name="Unpack the sources", commands=[
            f"rm -rf {rel}/src {rel}/venv && mkdir {rel}/src && tar -xzf {rel}/source.tar.gz -C {rel}/src"],
            **as_app)
        pip.venv(name="Create the release's virtualenv", path=f"{rel}/venv", python=python_for_host()[0],
                 **as_app)
        # The project itself (pip.packages would drop psycopg's extras; installing the package keeps them).
        server.shell(name="Install the release into its virtualenv", commands=[
            f"{rel}/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check {rel}/src"],
            **as_app)
        migrate = "migrate --bootstrap" if cfg("app_bootstrap_schema") else "migrate"
        server.shell(name=f"Run the migrations ({migrate})",
                     commands=[f"SEATWATCH_RELEASE={rel} {p['run']} {migrate}"], **as_app)
        new_release = files.file(name="Mark the release complete", path=f"{rel}/.complete",
                                 user=user, group=user, mode="644")

    link = host.get_fact(Link, path=p["current"])
    previous = link.get("link_target") if link else None
    switch = None
    if previous != rel:
        switch = server.shell(
            name=f"Switch current to release {release_id}",
            commands=[f"ln -sfn {rel} {p['current']}.new && mv -T {p['current']}.new {p['current']}"],
            **as_app,
        )
    if new_release is not None:
        keep = max(int(cfg("app_keep_releases")), 2)
        server.shell(
            name=f"Keep the {keep} newest releases",
            commands=[
                f"cd {p['releases']} && ls -1t | while read -r r; do "
                f"[ -d \"$r\" ] && [ \"$PWD/$r\" != \"{rel}\" ] && [ \"$PWD/$r\" != \"{previous}\" ] && echo \"$r\"; "
                f"done | tail -n +{keep - 1} | xargs -r rm -rf --"
            ],
            **as_app,
        )
    return {
        "id": release_id,
        "dir": rel,
        "previous": previous if previous and previous != rel else None,
        "changed": [op for op in (env_file, runner, switch) if op is not None],
    }
