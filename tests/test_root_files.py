"""What root runs and writes on the server, as rendered: never anything the app user can change or redirect.

The activation (roles/activation.py) is given a config over a scratch tree and its file handling run
for real: links planted where it writes are refused or replaced, never followed, and it refuses to run at
all when one of its directories could be changed by the app user. The layout the roles and
`scripts/ops.py` agree on is checked here too; tests/test_deploy.py plants the links on a real host.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import stat
import sys

import pytest

from roles import activation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_USER = "nobody"  # an unprivileged user that exists everywhere
needs_root = pytest.mark.usefixtures("root_user")  # ownership checks, as on the server


def app_config(tmp_path, user=APP_USER):
    """The app's activation config as roles/pm2.py writes it, with every place in a scratch tree."""
    root = tmp_path / "opt"
    paths = {"root": root, "bin": tmp_path / "lib", "state": tmp_path / "state", "log": tmp_path / "log"}
    for d in (*paths.values(), root / "releases", paths["state"] / "gated"):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    config = {
        "user": user, "home": "/nonexistent", "root": str(root), "current": str(root / "current"),
        "bin": str(paths["bin"]), "ecosystem": str(paths["bin"] / "ecosystem.config.js"),
        "run": str(paths["bin"] / "run"), "marker": str(paths["state"] / "active"),
        "gated": str(paths["state"] / "gated"), "log": str(paths["log"] / "activate.log"),
        "audit": str(paths["log"] / "deploys.log"), "audit_name": "activate", "label": "release",
        "failed": "DEPLOY FAILED", "timeout": 5, "stable_seconds": 10, "apps": ["web", "worker"],
        "process": "worker", "heartbeat": True, "health_name": "web health", "health_host": None,
        "health_url": "http://127.0.0.1:1/api/monitoring/health", "health_codes": [200, 503]}
    return config, paths


def render_activate(tmp_path, user=APP_USER, **overrides):
    """The activation as the entry point builds it: its config read from a JSON file (roles/activation.py)."""
    config, paths = app_config(tmp_path, user)
    path = paths["bin"] / "activate.json"
    path.write_text(json.dumps({**config, **overrides}))
    return activation.Activation(activation.load_config(str(path))), paths


@pytest.fixture
def canary(tmp_path):
    """A root-owned file that must never change: every planted link points at it."""
    path = tmp_path / "canary"
    path.write_text("root's own\n")
    os.chmod(path, 0o600)
    return path


def unchanged(canary) -> bool:
    st = os.lstat(canary)
    return canary.read_text() == "root's own\n" and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


def test_a_configured_activation_runs_nothing_until_asked(tmp_path):
    module, paths = render_activate(tmp_path)
    assert callable(module.activate) and module.log is None
    assert not (paths["log"] / "activate.log").exists()


def test_planted_links_are_replaced_or_refused_never_followed(tmp_path, canary):
    act, paths = render_activate(tmp_path)
    marker = paths["state"] / "active"
    # the temporary file and the target itself: both links to the canary
    os.symlink(canary, f"{marker}.new")
    os.symlink(canary, marker)
    act.write_root_file(str(marker), "release hash\n")
    assert not marker.is_symlink() and marker.read_text() == "release hash\n"
    assert stat.S_IMODE(marker.stat().st_mode) == 0o644
    # the log, the gated entry and the audit log: opening a link fails (O_NOFOLLOW)
    log = paths["log"] / "activate.log"
    os.symlink(canary, log)
    with pytest.raises(OSError) as exc:
        act.open_log()
    assert exc.value.errno == errno.ELOOP
    os.symlink(canary, paths["state"] / "gated" / "r1")
    with pytest.raises(OSError):
        act.mark_gated(str(paths["root"] / "releases" / "r1"))
    os.symlink(canary, act.c["audit"])
    with pytest.raises(OSError):
        act.audit("r1", "gated")
    # the `current` link is replaced by root's own link, whatever was planted at its temporary name
    os.symlink(canary, str(paths["root"] / "current.new"))
    act.switch(str(paths["root"] / "releases" / "r1"))
    assert os.readlink(paths["root"] / "current") == str(paths["root"] / "releases" / "r1")
    assert unchanged(canary)


@needs_root
def test_it_refuses_to_run_when_the_app_user_could_change_its_directories(tmp_path, canary, capsys):
    act, paths = render_activate(tmp_path)
    tmp_parent = str(tmp_path)
    assert act.untrusted(str(paths["state"])) is None  # root's, 0755, under sticky /tmp
    nobody = pwd.getpwnam(APP_USER)
    os.chown(paths["state"], nobody.pw_uid, nobody.pw_gid)  # as shared/ was: the app user's
    assert "can be changed by others" in act.untrusted(str(paths["state"] / "gated"))
    os.symlink(canary, paths["log"] / "activate.log")
    rc = act.activate(str(paths["root"] / "releases" / "r1"), "r1 hash")
    assert rc == 1 and "refusing to run as root" in capsys.readouterr().out
    os.chown(paths["state"], 0, 0)
    os.chmod(paths["log"], 0o777)  # writable by anyone, the app user included
    assert "can be changed by others" in act.untrusted(str(paths["log"]))
    os.chmod(paths["log"], 0o755)
    os.rename(paths["bin"], tmp_path / "lib.real")  # a link in the path
    os.symlink(tmp_path / "lib.real", paths["bin"])
    assert "is not a directory" in act.untrusted(str(paths["bin"]))
    assert act.untrusted(tmp_parent) is None
    assert unchanged(canary)


@needs_root
def test_it_refuses_a_release_outside_the_releases_directory(tmp_path, capsys):
    act, paths = render_activate(tmp_path)
    assert act.activate(str(tmp_path / "elsewhere"), "x hash") == 1
    assert "is not a release directory" in capsys.readouterr().out


def test_the_roles_and_ops_agree_on_roots_places():
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import ops
    finally:
        sys.path.pop(0)
    from roles import common

    assert ops.BIN == common.BIN_DIR
    assert ops.MARKER == f"{common.STATE_DIR}/active"  # the gated lists: only the activation reads them
    assert ops.APP.activate == f"{common.BIN_DIR}/activate"
    assert ops.SITE_PLACE.activate == f"{common.BIN_DIR}/site-activate"
    assert ops.SITE_PLACE.activate_log == f"{common.LOG_DIR}/site-activate.log"
    assert ops.ACTIVATE_LOG == f"{common.LOG_DIR}/activate.log" and ops.AUDIT.startswith(common.LOG_DIR + "/")
    assert ops.LOCK.startswith(common.STATE_DIR + "/")
    for place in (common.BIN_DIR, common.STATE_DIR, common.LOG_DIR, common.ENV_DIR):
        assert not place.startswith(ops.ROOT), place  # nothing of root's under the app's tree


@needs_root
@pytest.mark.parametrize("releases_is_a_link", [False, True])
def test_the_old_app_owned_layout_is_taken_back_without_following_its_links(tmp_path, canary, releases_is_a_link):
    """A host deployed before: /opt/seatwatch, bin/ and shared/ the app user's, with links it planted."""
    import subprocess

    from roles.app import _CARRY_OVER_GATED, _ROOT_FIX, _ROOT_PROBLEMS

    nobody = pwd.getpwnam(APP_USER)
    root, gated, elsewhere = tmp_path / "opt", tmp_path / "gated", tmp_path / "elsewhere"
    for d in (root / "bin", root / "shared", elsewhere / "r0"):
        d.mkdir(parents=True)
    gated.mkdir()
    (root / "shared" / "app.env").write_text("SECRET=1\n")
    if releases_is_a_link:  # planted: root's chown would have followed it
        os.symlink(elsewhere, root / "releases")
    else:
        (root / "releases" / "r1").mkdir(parents=True)
        (root / "releases" / "r1" / ".gated").write_text("")
        (root / "releases" / "r2").mkdir()
        os.symlink(canary, root / "releases" / "r2" / ".gated")  # a link is not a gated release
        os.symlink(root / "releases" / "r1", root / "current")
    os.symlink(canary, root / "ecosystem.config.js")
    os.symlink(canary, root / "bin" / "activate")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, nobody.pw_uid, nobody.pw_gid)

    def sh(script: str) -> str:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout

    problems = sh(_ROOT_PROBLEMS.format(root=root, user=APP_USER))
    assert "owner" in problems and "stray bin" in problems and "stray shared" in problems
    sh(_ROOT_FIX.format(root=root, user=APP_USER))
    sh(_CARRY_OVER_GATED.format(releases=root / "releases", gated=gated))
    assert sh(_ROOT_PROBLEMS.format(root=root, user=APP_USER)).strip() == ""
    st = os.lstat(root)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert sorted(os.listdir(root)) == (["releases"] if releases_is_a_link else ["current", "releases"])
    releases = os.lstat(root / "releases")
    assert stat.S_ISDIR(releases.st_mode) and releases.st_uid == nobody.pw_uid
    assert sorted(os.listdir(gated)) == ([] if releases_is_a_link else ["r1"])
    assert unchanged(canary) and sorted(os.listdir(elsewhere)) == ["r0"]
    assert os.lstat(elsewhere).st_uid == os.geteuid()  # the link's target was not chowned
