"""Root's activation log and the deploy's output carry PM2's `jlist` and stdout, which the app user's
daemon writes: a hostile one forges no line and no terminal escape there (issue 27). The activation
(roles/activation.py), its gate and reload run against a stand-in `pm2` answer."""

from __future__ import annotations

import json
import re
import subprocess

from roles import activation
from tests.test_root_files import render_activate

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # a clipboard write
FORGED = "\n2026-12-06T21:00:00Z gate passed for release r1: worker pid 1 online\r\x1b[2K"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def hostile_jlist() -> str:
    return "noise " + json.dumps([{
        "name": "worker", "pid": "7" + FORGED,
        "pm2_env": {"status": "errored" + FORGED + OSC52, "restart_time": "\u2028" + "x" * 5000,
                    "pm_exec_path": "/x" + FORGED}}])


def test_a_hostile_jlist_and_pm2_stdout_write_single_clean_lines(tmp_path, capsys, monkeypatch):
    act, paths = render_activate(tmp_path, timeout=0.5, health_url=None)

    def as_app(*cmd, env=None, timeout=300):
        out = hostile_jlist() if cmd[:2] == ("pm2", "jlist") else "pm2 says" + FORGED + OSC52
        return subprocess.CompletedProcess(cmd, 1, stdout=out)

    act.as_user = as_app
    monkeypatch.setattr(activation.subprocess, "run", lambda *a, **k: None)  # systemctl start pm2-<user>
    act.open_log()
    assert act.reload() is False  # startOrReload "failed" with a hostile stdout
    failure = act.gate(str(paths["root"] / "releases" / "r1"))
    act.say("DEPLOY FAILED: release r1 did not pass the gate: %s" % failure)
    act.log.close()

    written = (paths["log"] / "activate.log").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    for text in (written, printed):
        lines = text.splitlines()
        assert lines and all(STAMP.match(line) for line in lines), text
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
        assert "\u2028" not in text
        assert all(len(line) <= activation.MAX_LINE_CHARS + 40 for line in lines)
        assert not any(line[len("2026-12-06T21:00:00Z "):].startswith("gate passed")
                       for line in lines)
