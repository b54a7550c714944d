"""scripts/ops.py without a host: every shape the Makefile calls it with parses (argparse), `--help` per
command, and `releases`/`rollback` read root's activation listing (JSON) and pick what to activate; the
ssh is a stand-in. tests/test_deploy*.py run the same commands against booted hosts."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import ops  # noqa: E402

# What the Makefile runs (its targets with and without their variables), and what each must mean.
MAKEFILE_CALLS = [
    (["deploy"], "deploy", {"break_lock": False}),
    (["deploy", "--break-lock"], "deploy", {"break_lock": True}),
    (["logs"], "logs", {"lines": None, "since": None}),
    (["logs", "100", "--since", "2h"], "logs", {"lines": 100, "since": "2h"}),
    (["logs", "--since", "10m"], "logs", {"lines": None, "since": "10m"}),
    (["audit"], "audit", {"lines": 20}),
    (["audit", "5"], "audit", {"lines": 5}),
    (["restart"], "restart", {"app": None}),
    (["restart", "site"], "restart", {"app": "site"}),
    (["run", "dead-letters --drop 3"], "run", {"words": ["dead-letters --drop 3"]}),
    (["run", "handover", "--to", "vps"], "run", {"words": ["handover", "--to", "vps"]}),
    (["releases"], "releases", {}),
    (["rollback"], "rollback", {"site": False, "release": None}),
    (["rollback", "--site", "k1"], "rollback", {"site": True, "release": "k1"}),
    (["rollback", "abc123"], "rollback", {"site": False, "release": "abc123"}),
    (["lock", "status"], "lock", {"action": "status"}),
    (["lock", "break"], "lock", {"action": "break"}),
    (["run", ""], "run", {"words": [""]}),  # make run without CMD: the usage, from cmd_run
    (["status"], "status", {}), (["env"], "env", {}), (["ssh"], "ssh", {}), (["cutover-check"], "cutover-check", {}),
]


@pytest.mark.parametrize("argv, command, values", MAKEFILE_CALLS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_makefile_call_parses_to_its_command(argv, command, values):
    args = ops.parser().parse_args(argv)
    assert args.command == command and callable(args.func)
    assert {k: getattr(args, k) for k in values} == values


def test_every_makefile_target_calls_a_command_ops_knows():
    import re

    names = set(ops.parser()._subparsers._group_actions[0].choices)
    called = set(re.findall(r"scripts/ops\.py (\S+)", (REPO / "Makefile").read_text()))
    assert called and called <= names, called - names


@pytest.mark.parametrize("argv", [["lock", "steal"], ["restart", "web2"], ["logs", "many"], ["nope"], []])
def test_a_wrong_call_is_refused_with_the_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        ops.parser().parse_args(argv)
    assert exc.value.code == 2 and "usage: scripts/ops.py" in capsys.readouterr().err


def test_each_command_has_its_own_help():
    cp = subprocess.run([sys.executable, str(REPO / "scripts" / "ops.py"), "logs", "--help"], capture_output=True,
                        text=True, cwd=REPO)
    assert cp.returncode == 0 and "--since WHEN" in cp.stdout and "10m, 2h, 1d" in cp.stdout


def listing(*rows, active="/opt/seatwatch/releases/r2 cafe", directory="/opt/seatwatch/releases"):
    return json.dumps({"active": active, "dir": directory, "releases": [
        {"release": r, "deployed": "2026-12-07T01:00:00Z", "flags": f} for r, f in rows]})


@pytest.fixture
def server(monkeypatch):
    """The ssh stand-in: what each remote command was, and the answer to `activate releases`."""
    seen = {"remote": [], "answer": {}, "ran": []}

    def ssh(remote, check=True, capture=True):
        seen["remote"].append(remote)
        place = "site" if "site-activate" in remote else "app"
        return subprocess.CompletedProcess(remote, 0, stdout=seen["answer"].get(place, "{}"), stderr="")

    def run(cmd, **kwargs):
        seen["ran"].append(cmd[-1])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setenv("SEATWATCH_HOST", "203.0.113.10")
    monkeypatch.setattr(ops, "ssh", ssh)
    monkeypatch.setattr(ops.subprocess, "run", run)
    monkeypatch.setattr(ops, "operator", lambda: "op@example.com")
    return seen


def test_releases_come_from_roots_activation_not_from_a_pasted_script(server, capsys):
    server["answer"]["app"] = listing(("r2", "current,active,gated"), ("r1", "gated"))
    server["answer"]["site"] = listing(("k1", "current,active,gated"), directory="/opt/seatwatch-site/releases")
    assert ops.cmd_releases(ops.parser().parse_args(["releases"])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("r2") and "current,active,gated" in out.splitlines()[1]
    assert "site build (key)" in out and "k1" in out.split("site build (key)")[1]
    assert server["remote"][0] == ("if [ -e /usr/local/lib/seatwatch/activate.json ]; then /usr/bin/python3 "
                                   "/usr/local/lib/seatwatch/activate releases; else echo '{}'; fi")


@pytest.mark.parametrize("site", [False, True])
def test_rollback_activates_the_newest_gated_release_that_is_not_current(server, site, capsys):
    directory = "/opt/seatwatch-site/releases" if site else "/opt/seatwatch/releases"
    server["answer"]["site" if site else "app"] = listing(
        ("r3", "never-gated"), ("r2", "current,active,gated"), ("r1", "gated"), ("r0", "gated"),
        active=f"{directory}/r2 cafe", directory=directory)
    argv = ["rollback", "--site"] if site else ["rollback"]
    assert ops.cmd_rollback(ops.parser().parse_args(argv)) == 0
    assert "activating %s r1 (was r2)" % ("site build" if site else "release") in capsys.readouterr().out
    entry = "site-activate" if site else "activate"
    sudo, sh, c, command = shlex.split(server["ran"][0])  # sudo sh -c '<roles/pm2.py activation_command>'
    assert f"/usr/bin/python3 /usr/local/lib/seatwatch/{entry} {directory}/r1 '{directory}/r1 cafe'" in command
    audit = server["remote"][-1]
    assert f"rollback operator=op@example.com {'site' if site else 'release'}=r1 result=ok" in audit


def test_rollback_to_an_unknown_release_names_it_and_changes_nothing(server):
    server["answer"]["app"] = listing(("r2", "current,active,gated"))
    with pytest.raises(SystemExit, match="no such release to roll back to: 'zz'"):
        ops.rollback(ops.APP, "zz")
    with pytest.raises(SystemExit, match="no such release to roll back to: None"):
        ops.rollback(ops.APP)  # nothing gated but the current one
    assert server["ran"] == []
