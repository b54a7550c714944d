"""Settings: every missing variable is named, bad values are refused, defaults apply."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import OPTIONAL, REQUIRED, Settings, SettingsError, missing_variables
from tests.conftest import TEST_ENV


def env(**changes):
    out = {k: v for k, v in TEST_ENV.items() if k in REQUIRED}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def test_every_missing_variable_is_named_in_one_message():
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env(DATABASE_URL=None, CRON_SECRET="  ", RESEND_API_KEY=None))
    message = str(err.value)
    for name in ("DATABASE_URL", "CRON_SECRET", "RESEND_API_KEY"):
        assert name in message
    assert "SCRAPER_URL" not in message


def test_defaults_and_trailing_slashes():
    s = Settings.from_env(env(SCRAPER_URL="https://scraper.example/", NEXT_PUBLIC_SITE_URL="https://x.example/"))
    assert s.redis_url == OPTIONAL["REDIS_URL"] and s.scraper_timeout == 30.0
    assert s.huey_read_timeout == 300 and s.scraper_url == "https://scraper.example"
    assert s.site_url == "https://x.example"


@pytest.mark.parametrize("changes, fragment", [
    ({"SCRAPER_TIMEOUT_SECONDS": "abc"}, "SCRAPER_TIMEOUT_SECONDS must be a number"),
    ({"HUEY_READ_TIMEOUT_SECONDS": "2.5x"}, "HUEY_READ_TIMEOUT_SECONDS must be a whole number"),
    ({"SEATWATCH_SIM_PERIOD_SECONDS": "soon"}, "SEATWATCH_SIM_PERIOD_SECONDS must be a number"),
    ({"SCRAPER_TIMEOUT_SECONDS": "0"}, "SCRAPER_TIMEOUT_SECONDS"),
    ({"HUEY_READ_TIMEOUT_SECONDS": "900"}, "HUEY_READ_TIMEOUT_SECONDS"),
    ({"SCRAPER_URL": "scraper.example"}, "SCRAPER_URL"),
    ({"NOTIFICATION_FROM_EMAIL": "nobody"}, "NOTIFICATION_FROM_EMAIL"),
])
def test_bad_values_are_refused(changes, fragment):
    with pytest.raises(SettingsError, match=fragment) as err:
        Settings.from_env(env(**changes))
    # never the value (a bound such as "(0, 120]" may share a digit with it: only longer values)
    assert not any(v in str(err.value) for v in changes.values() if len(v) > 1)


def test_secrets_stay_out_of_repr():
    s = Settings.from_env(env())
    text = repr(s)
    for secret in (TEST_ENV["CRON_SECRET"], TEST_ENV["SUPABASE_SERVICE_ROLE_KEY"], TEST_ENV["DATABASE_URL"]):
        assert secret not in text


def test_missing_variables_lists_names():
    assert missing_variables(env()) == []
    assert missing_variables(env(SCRAPER_URL=None)) == ["SCRAPER_URL"]


def test_cli_stops_with_one_line_naming_them():
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    proc = subprocess.run([sys.executable, "-m", "app", "breaker", "status"], env=clean,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing required environment variable(s):")
    for name in REQUIRED:
        assert name in lines[0]


@pytest.mark.parametrize("raw", ["  service-role-key\n", "service-role-key\t", "ключ-😀 "])
def test_service_role_key_is_used_byte_for_byte(raw, caplog):
    import base64
    import hashlib
    import hmac

    from app.mail.unsubscribe import make_token, verify_token

    with caplog.at_level("WARNING", logger="app.settings"):
        s = Settings.from_env(env(SUPABASE_SERVICE_ROLE_KEY=raw))
    assert s.unsubscribe_secret == raw  # not stripped: the site signs with the raw value
    [warning] = [r for r in caplog.records if "SUPABASE_SERVICE_ROLE_KEY" in r.getMessage()]
    assert "whitespace" in warning.getMessage() and raw.strip() not in warning.getMessage()
    token = make_token("user-1", s.unsubscribe_secret, now=0)
    user, expires, signature = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
    assert signature == hmac.new(raw.encode(), f"{user}:{expires}".encode(), hashlib.sha256).hexdigest()
    assert verify_token(token, raw.strip(), now=0) is None  # a stripped key would not verify


def test_service_role_key_without_whitespace_does_not_warn(caplog):
    with caplog.at_level("WARNING", logger="app.settings"):
        s = Settings.from_env(env(SUPABASE_SERVICE_ROLE_KEY="clean-key"))
    assert s.unsubscribe_secret == "clean-key" and not caplog.records


@pytest.mark.parametrize("sender", [
    "alerts@pickmyclass.app", "PickMyClass <alerts@pickmyclass.app>", "<alerts@pickmyclass.app>",
    '"PickMyClass Alerts" <alerts@mail.pickmyclass.app>', "  PickMyClass <a.b+c@x-y.example.test>  ",
])
def test_senders_resend_accepts(sender):
    assert Settings.from_env(env(NOTIFICATION_FROM_EMAIL=sender)).notification_from_email == sender.strip()


@pytest.mark.parametrize("sender", [
    "PickMyClass alerts@pickmyclass.app", "alerts@pickmyclass", "PickMyClass <alerts@pickmyclass.app",
    "alerts@@pickmyclass.app", "a@b.app, c@d.app", "PickMyClass <>", "@pickmyclass.app",
    "PickMyClass <alerts@pickmyclass.app> x", "alerts @pickmyclass.app",
])
def test_senders_resend_refuses_are_refused_naming_the_variable_not_the_value(sender):
    with pytest.raises(SettingsError, match="NOTIFICATION_FROM_EMAIL") as err:
        Settings.from_env(env(NOTIFICATION_FROM_EMAIL=sender))
    assert sender.strip() not in str(err.value)


def test_a_bad_sender_stops_start_up_with_exit_2():
    import os

    proc = subprocess.run([sys.executable, "-m", "app", "breaker", "status"],
                          env={**os.environ, "NOTIFICATION_FROM_EMAIL": "PickMyClass alerts@pickmyclass.app"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "NOTIFICATION_FROM_EMAIL" in line and "alerts@pickmyclass.app" not in line


def test_audit_retention_setting():
    assert Settings.from_env(env()).audit_retention_days == 365
    assert Settings.from_env(env(SEATWATCH_AUDIT_RETENTION_DAYS="30")).audit_retention_days == 30
    for bad in ("0", "abc", "100000"):
        with pytest.raises(SettingsError, match="SEATWATCH_AUDIT_RETENTION_DAYS"):
            Settings.from_env(env(SEATWATCH_AUDIT_RETENTION_DAYS=bad))
