"""The alert channels as a server has them: Apprise from requirements.lock alone (a venv built from
the lock, nothing else), readable messages for push services, and an overall deadline against a peer
that trickles its answer (issue 27)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.alerting import alerts, notify
from app.settings import Settings
from tests.capture import CaptureServer
from tests.conftest import TEST_ENV
from tests.deadends import trickling_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def hook():
    with CaptureServer() as server:
        yield server


def settings_with(urls: str) -> Settings:
    return Settings.from_env({**TEST_ENV, "SEATWATCH_ALERT_URLS": urls})


@pytest.mark.parametrize("url, kind", [
    ("https://ntfy.sh/seatwatch-ops", "apprise"),
    ("https://hooks.slack.com/services/T000/B000/XXXX", "apprise"),
    ("https://discord.com/api/webhooks/1234/abcd", "apprise"),
    ("tgram://123456:ABCdef/42", "apprise"),
    ("https://hooks.example.test/seatwatch", "webhook"),
    ("https://api.telegram.org/bot1:x/sendMessage?chat_id=42", "webhook"),
])
def test_push_services_get_a_message_not_our_json(url, kind):
    [channel] = notify.channels(settings_with(url))
    assert channel.kind == kind


def test_an_ntfy_alert_is_a_readable_message(hook):
    settings = settings_with(f"ntfy://127.0.0.1:{hook.port}/seatwatch-ops")
    [result] = alerts.send_test(settings)
    assert result["ok"], result
    [got] = hook.requests
    body = got["json"]
    assert body["topic"] == "seatwatch-ops"
    assert "test alert" in body["message"] and not body["message"].lstrip().startswith("{")
    assert body["title"].startswith("test: ")


def test_a_trickling_webhook_cannot_hold_the_evaluation():
    with trickling_server() as url:
        settings = settings_with(url + "/hook")
        started = time.monotonic()
        [result] = alerts.send_test(settings)
        took = time.monotonic() - started
    assert not result["ok"] and result["error"] == "DeadlineExceeded"
    assert took < notify.SEND_TIMEOUT_SECONDS + 2


def test_a_trickling_resend_cannot_hold_the_email_alert():
    with trickling_server() as url:
        settings = dataclasses.replace(settings_with(""), resend_api_url=url,
                                       alert_emails=("ops@example.test",))
        started = time.monotonic()
        [result] = alerts.send_test(settings)
    assert not result["ok"] and "DeadlineExceeded" in result["error"]
    assert time.monotonic() - started < notify.SEND_TIMEOUT_SECONDS + 2


SEND = """
import json, sys
from app.settings import get_settings
from app.alerting import alerts
print(json.dumps({"results": alerts.send_test(get_settings()),
                  "apprise_loaded_before": False}))
"""


def python_313() -> str | None:
    """A Python 3.13 here (Debian 13's; Python 3.13 dropped imghdr, which Apprise's PGP part imports)."""
    import shutil

    pyenv = Path.home() / ".pyenv" / "versions"  # its shims run only the selected version
    found = next((str(p / "bin" / "python3.13") for p in sorted(pyenv.glob("3.13*"))
                  if (p / "bin" / "python3.13").exists()), None)
    which = shutil.which("python3.13")
    return found or (which if which and "/shims/" not in which else None)


@pytest.mark.parametrize("python", ["this", "3.13"])
def test_an_apprise_url_is_delivered_from_a_venv_built_from_the_lock_alone(hook, tmp_path, python):
    """What the deploy installs (requirements.lock with its hashes, then the app without deps)
    sends an ntfy:// alert; no test extra is needed for it."""
    interpreter = sys.executable if python == "this" else python_313()
    if interpreter is None:
        if os.environ.get("CI"):  # CI's machines have pyenv's 3.13: missing there is a fault, not a skip
            pytest.fail("no Python 3.13 on this CI machine (pyenv's 3.13 expected)")
        pytest.skip("no Python 3.13 on this machine")
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(REPO / "requirements.lock")],
                   check=True, timeout=900, capture_output=True)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True,
                   timeout=300, capture_output=True, cwd=tmp_path)
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": "",
           "SEATWATCH_ALERT_URLS": f"ntfy://127.0.0.1:{hook.port}/ops"}
    cp = subprocess.run([str(venv / "bin" / "python"), "-c", SEND], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    [result] = json.loads(cp.stdout)["results"]
    assert result["ok"], result
    [got] = hook.requests
    assert got["json"]["topic"] == "ops" and "test alert" in got["json"]["message"]
