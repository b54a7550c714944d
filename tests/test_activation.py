"""The activation (roles/activation.py) as a module: imported directly, given a config in a scratch tree,
PM2 answered by a stand-in. The switch, the gate, the rollback, the audit lines and the releases listing
without a host; tests/test_deploy*.py run the same code as root on booted ones."""

from __future__ import annotations

import ast
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from roles import activation
from tests.test_root_files import app_config, render_activate

REPO = Path(__file__).resolve().parent.parent
SERVER_FILES = [REPO / "roles" / "activation.py", REPO / "roles" / "activate_entry.py"]
needs_root = pytest.mark.usefixtures("root_user")  # the directories must be root's, as on the server


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.name)
def test_the_server_side_is_stdlib_only_and_parses_under_the_oldest_system_python(path):
    """/usr/bin/python3 runs it (3.10 on Ubuntu 22.04), never the release's venv: nothing of app/, roles/ or PyPI."""
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_every_key_the_deploy_writes_is_one_the_activation_reads_and_a_missing_one_fails(tmp_path):
    config, _ = app_config(tmp_path)
    assert set(config) == set(activation.KEYS)
    path = tmp_path / "activate.json"
    path.write_text(json.dumps({k: v for k, v in config.items() if k != "timeout"}))
    with pytest.raises(ValueError, match="lacks timeout"):
        activation.load_config(str(path))


class FakePM2:
    """PM2 of the service user: the worker online (stable at once) or errored, per release `current` points at."""

    def __init__(self, act, broken=()):
        self.act, self.broken, self.calls = act, set(broken), []

    def __call__(self, *cmd, env=None, timeout=300):
        self.calls.append(cmd)
        release = os.path.basename(os.readlink(self.act.c["current"]))
        if cmd[:2] == ("pm2", "jlist"):
            status = "errored" if release in self.broken else "online"
            out = json.dumps([{"name": "worker", "pid": 42, "pm2_env": {"status": status, "restart_time": 0}}])
        elif cmd[1:] == ("heartbeat",):
            out = json.dumps({"beats": [{"release": release, "pid": 42}]})
        else:
            out = "ok"
        return subprocess.CompletedProcess(cmd, 0, stdout=out)


def scratch(tmp_path, monkeypatch, broken=(), **overrides):
    act, paths = render_activate(tmp_path, timeout=1, stable_seconds=0, health_url=None, **overrides)
    releases = paths["root"] / "releases"
    for name in ("r1", "r2"):
        (releases / name).mkdir()
        (releases / name / ".complete").write_text("")
    act.as_user = FakePM2(act, broken)
    monkeypatch.setattr(activation.subprocess, "run", lambda *a, **k: None)  # systemctl start pm2-<user>
    monkeypatch.setattr(activation.time, "sleep", lambda s: None)
    return act, paths, releases


@needs_root
def test_a_release_that_passes_the_gate_is_marked_gated_and_audited(tmp_path, monkeypatch, capsys):
    act, paths, releases = scratch(tmp_path, monkeypatch)
    assert act.activate(str(releases / "r1"), f"{releases / 'r1'} cafe") == 0
    act.log.close()
    assert os.readlink(act.c["current"]) == str(releases / "r1")
    assert (paths["state"] / "active").read_text() == f"{releases / 'r1'} cafe\n"
    assert (paths["state"] / "gated" / "r1").is_file()
    assert (paths["log"] / "deploys.log").read_text().endswith(" activate release=r1 result=gated\n")
    out = capsys.readouterr().out
    assert "gate passed for release r1: worker pid 42 online, stable, heartbeat from this release" in out
    assert ("pm2", "save", "--force") in act.as_user.calls
    assert (paths["log"] / "activate.log").read_text() == out


@needs_root
def test_a_release_that_fails_the_gate_is_rolled_back_to_the_last_gated_one(tmp_path, monkeypatch, capsys):
    act, paths, releases = scratch(tmp_path, monkeypatch, broken={"r2"})
    assert act.activate(str(releases / "r1"), f"{releases / 'r1'} cafe") == 0
    assert act.activate(str(releases / "r2"), f"{releases / 'r2'} beef") == 1
    out = capsys.readouterr().out
    assert "DEPLOY FAILED: release r2 did not pass the gate within 1 s: worker is errored" in out
    assert "ROLLED BACK to release r1, which serves again" in out
    assert os.readlink(act.c["current"]) == str(releases / "r1")
    assert (paths["state"] / "active").read_text() == f"{releases / 'r1'} beef\n"  # the new config hash
    assert not (paths["state"] / "gated" / "r2").exists()
    audit = (paths["log"] / "deploys.log").read_text().splitlines()
    assert audit[-1].endswith("activate release=r2 result=failed, rolled back to r1")
    listing = act.release_list()
    assert listing["active"] == f"{releases / 'r1'} beef"
    flags = {r["release"]: r["flags"] for r in listing["releases"]}
    assert flags == {"r1": "current,active,gated", "r2": "never-gated"}


@needs_root
def test_a_first_release_that_fails_has_nothing_to_go_back_to(tmp_path, monkeypatch, capsys):
    act, paths, releases = scratch(tmp_path, monkeypatch, broken={"r1"})
    assert act.activate(str(releases / "r1"), f"{releases / 'r1'} cafe") == 1
    assert "no previous gated release to roll back to" in capsys.readouterr().out
    assert not (paths["state"] / "active").exists()
    assert (paths["log"] / "deploys.log").read_text().endswith(" activate release=r1 result=failed\n")


@needs_root
def test_an_incomplete_release_is_refused_before_anything_switches(tmp_path, monkeypatch, capsys):
    act, paths, releases = scratch(tmp_path, monkeypatch)
    (releases / "r2" / ".complete").unlink()
    os.symlink(tmp_path / "canary", releases / "r2" / ".complete")  # a link is no .complete
    (tmp_path / "canary").write_text("")
    assert act.activate(str(releases / "r2"), "x cafe") == 1
    assert "is not a complete release" in capsys.readouterr().out
    assert not os.path.lexists(act.c["current"])


class _Page(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802  the stdlib's name
        self.seen.append(self.headers.get("Host"))
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:1/sign-in")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_sites_health_asks_as_caddy_does_and_counts_a_redirect_without_following_it(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        act, _ = render_activate(tmp_path, health_url=f"http://127.0.0.1:{server.server_port}/",
                                 health_host="seats.example", health_codes=[])
        assert act.health() == 302 and _Page.seen == ["seats.example"]
    finally:
        server.shutdown()


def test_the_entry_point_loads_the_module_and_the_config_named_after_it(tmp_path):
    """As the deploy installs them: activation.py, `site-activate` (the launcher) and site-activate.json."""
    config, paths = app_config(tmp_path)
    lib = paths["bin"]
    shutil.copy(SERVER_FILES[0], lib / "activation.py")
    shutil.copy(SERVER_FILES[1], lib / "site-activate")
    releases = paths["root"] / "releases"
    (releases / "k1").mkdir()
    (releases / "k1" / ".complete").write_text("")
    os.symlink(releases / "k1", config["current"])
    (lib / "site-activate.json").write_text(json.dumps(config))
    cp = subprocess.run([sys.executable, str(lib / "site-activate"), "releases"], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["releases"][0]["release"] == "k1"
    assert json.loads(cp.stdout)["releases"][0]["flags"] == "current,never-gated"
    assert not (lib / "__pycache__").exists()  # nothing written beside root's code
    cp = subprocess.run([sys.executable, str(lib / "site-activate")], capture_output=True, text=True)
    assert cp.returncode == 2 and "usage: site-activate RELEASE_DIR MARKER" in cp.stderr
    (lib / "site-activate.json").unlink()
    cp = subprocess.run([sys.executable, str(lib / "site-activate"), "releases"], capture_output=True, text=True)
    assert cp.returncode == 2 and "cannot read its config" in cp.stderr
