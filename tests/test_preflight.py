"""Settings checked on the laptop before any connection (roles/preflight.py): `make dry-run`'s table
and `make deploy` stop on every problem at once, naming variables, never quoting values. No host."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.test_deploy_settings import GOOD_ENV, _clean_env, _project_copy


def _config(project, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roles.preflight"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=60)


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.split() and line.split()[0] == name)


def test_no_settings_at_all_names_every_required_one_and_shows_true_defaults():
    project = _project_copy()
    try:
        cp = _config(project, _clean_env())
        assert cp.returncode == 2
        [missing] = [l for l in cp.stderr.splitlines() if "missing required" in l]
        for name in ("SEATWATCH_HOST", "SEATWATCH_DOMAIN", "DATABASE_URL", "CRON_SECRET", "REDIS_PASSWORD"):
            assert name in missing
        assert "MISSING" in _row(cp.stdout, "SEATWATCH_DOMAIN") and "[required]" in _row(cp.stdout, "SEATWATCH_DOMAIN")
        assert "ubuntu" in _row(cp.stdout, "SEATWATCH_SSH_USER") and "[default]" in _row(cp.stdout, "SEATWATCH_SSH_USER")
        assert " 22 " in _row(cp.stdout, "SEATWATCH_SSH_PORT")
        for dev_only in ("SEATWATCH_SCRAPER", "SEATWATCH_MAILER", "SEATWATCH_OUTBOX_DIR", "SEATWATCH_ENV"):
            assert dev_only not in cp.stdout
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_typos_and_malformed_values_are_named_with_the_closest_name_never_the_value():
    project = _project_copy()
    try:
        good = {k: v for k, v in GOOD_ENV.items() if not k.startswith("SEATWATCH_")}
        (project / "deploy.env").write_text("SEATWATCH_HOST=203.0.113.10\nSEATWATCH_DOMIAN=api.example.com\n"
                                            "SEATWATCH_REDIS_PORT=63a9\nSEATWATCH_AUDIT_RETENTION_DAYS=soon-ish\n")
        secrets = {**good, "REDIS_PASSWORD": "pw-secret-value", "RESEND_APIKEY": "re_typo_value"}
        secrets["CRON_SECRET"] = "cron-value-kept # old one"
        (project / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
        (project / "secrets.env").chmod(0o600)
        cp = _config(project, _clean_env())
        assert cp.returncode == 2, cp.stdout + cp.stderr
        err = cp.stderr
        assert "unknown setting SEATWATCH_DOMIAN in deploy.env (did you mean SEATWATCH_DOMAIN?)" in err
        assert "unknown setting RESEND_APIKEY in secrets.env (did you mean RESEND_API_KEY?)" in err
        assert "SEATWATCH_REDIS_PORT must be a whole number" in err and "63a9" not in err
        assert "SEATWATCH_AUDIT_RETENTION_DAYS must be a whole number of days" in err and "soon-ish" not in err
        assert "missing required setting(s): SEATWATCH_DOMAIN" in err  # the typo did not set it
        assert "Traceback" not in err and "re_typo_value" not in cp.stdout + err
        # an inline comment is not part of the value (the masked length says so: 15 characters)
        assert "*** (15 characters)" in _row(cp.stdout, "CRON_SECRET")
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_deploy_stops_before_any_connection():
    """ops.py deploy with a broken setting: exit 2, no ssh (the host does not exist), no traceback."""
    project = _project_copy()
    try:
        from tests.test_deploy_settings import REPO

        shutil.copytree(REPO / "scripts", project / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
        good = {k: v for k, v in GOOD_ENV.items() if not k.startswith("SEATWATCH_")}
        env = {**_clean_env(), **good, "SEATWATCH_HOST": "192.0.2.1", "SEATWATCH_DOMAIN": "api.example.com",
               "REDIS_PASSWORD": "pw", "SEATWATCH_SSH_PORT": "2x2"}
        cp = subprocess.run([sys.executable, "scripts/ops.py", "deploy"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 2
        assert cp.stderr.strip() == "deploy stopped: SEATWATCH_SSH_PORT must be a port number"
    finally:
        shutil.rmtree(project, ignore_errors=True)
