"""The operator's one look (scripts/opsview.py), its parts that need no host: the remote script's
sections, PM2's process list (a hostile one too), the env file against the laptop's, log windows.
The whole commands run against a booted host in tests/test_deploy.py."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import opsview  # noqa: E402


def test_sections_split_and_a_hostile_process_list_prints_as_plain_text():
    jlist = json.dumps([
        {"name": "web", "pm2_env": {"status": "online", "pm_uptime": 1_000_000, "restart_time": 2},
         "monit": {"memory": 53_900_000}},
        {"name": "worker\x1b]52;c;ZXZpbA==\x07\ngate passed", "pm2_env": {"status": "online\r"},
         "monit": {}}])
    text = (f"{opsview.SECTION}release\nabc123\n{opsview.SECTION}pm2\n>>>> In-memory PM2 is out-of-date\n{jlist}\n"
            f"{opsview.SECTION}status\nexit=1\n")
    parts = opsview.split_sections(text)
    assert parts["release"] == "abc123\n" and parts["status"] == "exit=1\n"
    rows = opsview.process_rows(parts["pm2"], now_ms=1_060_000)
    assert rows[0].split()[:3] == ["web", "online", "up"] and "restarts 2" in rows[0] and "53.9 MB" in rows[0]
    assert "0:01:00" in rows[0]
    assert all("\x1b" not in r and "\n" not in r and "\r" not in r and "\x07" not in r for r in rows)
    assert opsview.process_rows("not json", 0) == ["  (PM2's process list could not be read)"]
    assert opsview.process_rows('[{"name": "web"}]=== next section', 0)[0].split()[:2] == ["web", "None"]


def test_env_rows_mask_secrets_and_compare_with_the_laptop():
    rows = {n: (v, s) for n, v, s in opsview.env_rows(
        {"CRON_SECRET": "server-secret", "SCRAPER_URL": "https://s.example", "SEATWATCH_ENV": "production"},
        {"CRON_SECRET": "laptop-secret", "SCRAPER_URL": "https://s.example"})}
    assert rows["CRON_SECRET"] == ("*** (13 characters)", "differs from the laptop: make deploy applies it")
    assert rows["SCRAPER_URL"] == ("https://s.example", "same as the laptop")
    assert rows["SEATWATCH_ENV"][1] == "server only (set by the deploy)"


def test_log_windows():
    now = datetime(2026, 12, 6, 14, 30, tzinfo=timezone.utc)
    assert opsview.since_cutoff("10m", now) == datetime(2026, 12, 6, 14, 20, tzinfo=timezone.utc)
    assert opsview.since_cutoff("2026-12-06T13:00", now) == datetime(2026, 12, 6, 13, 0, tzinfo=timezone.utc)
    text = ("worker-out | 2026-12-06T14:10:00: old line\n"
            "web-out | 2026-12-06T14:25:00: a request\n"
            "worker-error | 2026-12-06T14:21:00: traceback head\n"
            "worker-error |   continued\x1b[31m\n")
    got = opsview.lines_since(text, opsview.since_cutoff("10m", now))
    assert got == ["worker-error | 2026-12-06T14:21:00: traceback head", "worker-error |   continued?[31m",
                   "web-out | 2026-12-06T14:25:00: a request"]
