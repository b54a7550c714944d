"""The deploy's own settings, host-free: stop bounds from one figure, the Redis config per version (started
for real), settings files that keep a redeploy from reverting, masked printouts, release ids, the lock file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis as redis_client

from app.queue import worker
from app.settings import Settings
from tests.test_deploy_config import GOOD_ENV, REPO

PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- stop timeouts

@pytest.mark.parametrize("scraper, read", [("30", "60"), ("120", "300"), ("10", "5")])
def test_stop_bounds_follow_the_workers_own_shutdown_timeout(scraper, read):
    from roles.common import stop_timeouts

    env = {**GOOD_ENV, "SCRAPER_TIMEOUT_SECONDS": scraper, "HUEY_READ_TIMEOUT_SECONDS": read}
    consumer = worker.shutdown_timeout(Settings.from_env(env))  # whatever its value is today
    t = stop_timeouts(env)
    assert t["consumer_s"] == consumer
    assert t["worker_kill_ms"] > consumer * 1000  # PM2 waits longer than the consumer's own bound
    # systemd waits for PM2 to stop web, then the worker, before killing the unit at reboot
    assert t["unit_stop_s"] * 1000 > t["worker_kill_ms"] + t["web_kill_ms"]


# --------------------------------------------------------------------------- Redis 6.0 vs 6.2+

@pytest.mark.parametrize("dpkg, expected", [("5:7.0.15-1~deb12u1", (7, 0)), ("5:6.0.16-1ubuntu1", (6, 0)),
                                            ("7.2.4", (7, 2)), ("", None)])
def test_redis_version_parsing(dpkg, expected):
    from roles.redis import parse_version

    assert parse_version(dpkg) == expected


def test_redis_bind_syntax_per_version():
    from roles.redis import bind_for

    assert bind_for((7, 0), "127.0.0.1 -::1") == "127.0.0.1 -::1"
    assert bind_for((6, 2), "127.0.0.1 -::1") == "127.0.0.1 -::1"
    assert bind_for((6, 0), "127.0.0.1 -::1") == "127.0.0.1"  # 6.0 refuses "-::1"
    assert bind_for((6, 0), "127.0.0.1 10.0.0.5") == "127.0.0.1 10.0.0.5"


@pytest.mark.parametrize("version", [(6, 0), (7, 0)])
def test_rendered_redis_conf_starts_a_real_redis_server(version, tmp_path):
    """Each branch's config, as rendered, runs the installed redis-server on a scratch port."""
    from roles.redis import render_conf

    port = _free_port()
    password = 'pa ss"word\\x'
    text = render_conf(version, "127.0.0.1 -::1", port, "64mb", password)
    assert ("-::1" in text) is (version >= (6, 2))
    # only the machine-specific paths change, for a private copy
    text = (text.replace("dir /var/lib/redis", f"dir {tmp_path}")
                .replace("pidfile /run/redis/redis-server.pid", f"pidfile {tmp_path}/r.pid")
                .replace("logfile /var/log/redis/redis-server.log", f"logfile {tmp_path}/r.log"))
    conf = tmp_path / "redis.conf"
    conf.write_text(text)
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", str(conf)])
    try:
        client = redis_client.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.ping()
                break
            except redis_client.ConnectionError:
                assert proc.poll() is None, (tmp_path / "r.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.1)
        # the app's password reads no configuration (the ACL, tests/test_redis_acl.py): the file says it
        assert "maxmemory-policy noeviction" in text and "\nbind 127.0.0.1" in text
        with pytest.raises(redis_client.exceptions.NoPermissionError):
            client.config_get("bind")
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(host="127.0.0.1", port=port, password="wrong").ping()
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_6_0_refuses_the_optional_bind_syntax_it_is_spared(tmp_path):
    """What the branch avoids: a real redis-server given an address it cannot bind, without '-', fails;
    with '-' (6.2+ syntax) it starts. (This machine's redis-server is 6.2+.)"""
    port = _free_port()
    base = f"port {port}\ndir {tmp_path}\nsave \"\"\n"
    ok = subprocess.Popen(["redis-server", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    ok.stdin.write(base + "bind 127.0.0.1 -192.0.2.77\n")
    ok.stdin.close()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("redis-server with an optional address did not start")
    finally:
        ok.terminate()
        ok.wait(10)
    bad = subprocess.run(["redis-server", "-"], input=base + "bind 127.0.0.1 192.0.2.77\n",
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode != 0 and "192.0.2.77" in bad.stdout + bad.stderr


# --------------------------------------------------------------------------- settings files

def _project_copy() -> Path:
    dest = Path(tempfile.mkdtemp(prefix="sw9-settings-"))
    for entry in ("inventory.py", "deploy.py", "pyproject.toml", "requirements.lock", "roles", "templates", "app"):
        src = REPO / entry
        (shutil.copytree(src, dest / entry, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, dest / entry))
    return dest


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in GOOD_ENV and k not in ("REDIS_URL", "RESEND_API_URL") and not k.startswith("SEATWATCH_")}


def test_settings_files_survive_a_new_shell_and_secrets_are_masked():
    project = _project_copy()
    try:
        secrets = {k: v for k, v in GOOD_ENV.items() if not k.startswith("SEATWATCH_")}
        from roles.config import SECRET_NAMES

        for name in SECRET_NAMES:
            if name in secrets or name == "REDIS_PASSWORD":
                secrets[name] = f"{name.lower()}-value-that-must-not-print"
        secrets["DATABASE_URL"] = "postgresql://u:db-password-not-printed@db.example:5432/postgres"
        (project / "deploy.env").write_text(
            "# checked in\nSEATWATCH_HOST=@local\nSEATWATCH_DOMAIN=api.example.com\n"
            "export SEATWATCH_SITE_UPSTREAM='https://site.example'\nSEATWATCH_HEALTH_TIMEOUT=120\n")
        (project / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
        (project / "secrets.env").chmod(0o600)
        env = _clean_env()  # a new shell: nothing exported
        cp = subprocess.run([sys.executable, "-m", "roles.config"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        out = cp.stdout
        line = next(l for l in out.splitlines() if "SEATWATCH_SITE_UPSTREAM" in l)
        assert "https://site.example" in line and "[deploy.env]" in line
        assert "120" in next(l for l in out.splitlines() if "SEATWATCH_HEALTH_TIMEOUT" in l)
        assert "[default]" in next(l for l in out.splitlines() if "SEATWATCH_KEEP_RELEASES" in l)
        for name, value in secrets.items():
            assert "[secrets.env]" in next(l for l in out.splitlines() if l.split()[0] == name)
            if name in SECRET_NAMES:
                assert value not in out and "db-password" not in out, name
        # the environment still wins over both files
        cp = subprocess.run([sys.executable, "-m", "roles.config"], cwd=project, capture_output=True, text=True,
                            env={**env, "SEATWATCH_SITE_UPSTREAM": "https://other.example"}, timeout=60)
        assert "https://other.example" in cp.stdout and "[environment]" in cp.stdout
        # and a real plan reads them: no variable is reported missing
        cp = subprocess.run([PYINFRA, "--dry", "inventory.py", "deploy.py"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
        assert "missing environment variable" not in cp.stdout + cp.stderr
        assert secrets["CRON_SECRET"] not in cp.stdout + cp.stderr
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_a_secret_in_the_checked_in_file_stops_the_deploy():
    project = _project_copy()
    try:
        (project / "deploy.env").write_text("SEATWATCH_HOST=@local\nCRON_SECRET=oops\n")
        cp = subprocess.run([sys.executable, "-m", "roles.config"], cwd=project, env=_clean_env(),
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode != 0 and "CRON_SECRET" in cp.stderr and "secrets.env" in cp.stderr
        assert "oops" not in cp.stdout + cp.stderr
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_secrets_env_is_ignored_by_git_and_deploy_env_is_not():
    for path, ignored in (("secrets.env", True), ("deploy.env", False)):
        cp = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert (cp.returncode == 0) is ignored, path


# --------------------------------------------------------------------------- release ids and the lock file

def test_release_id_names_the_commit_and_says_dirty(monkeypatch):
    from roles import common

    project = _project_copy()
    try:
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(project)]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "one"], check=True)
        commit = subprocess.run([*git, "log", "-1", "--format=%h", "--abbrev=10"], capture_output=True,
                                text=True).stdout.strip()
        monkeypatch.setattr(common, "PROJECT", project)
        common._bundle_cache.clear()
        assert common.release_bundle()[0] == commit
        (project / "README.md").write_text("docs only\n")  # not a release file: same release
        common._bundle_cache.clear()
        assert common.release_bundle()[0] == commit
        with open(project / "app" / "settings.py", "a") as fh:
            fh.write("\n# edited\n")
        common._bundle_cache.clear()
        dirty = common.release_bundle()[0]
        assert dirty.startswith(f"{commit}-dirty-")
    finally:
        common._bundle_cache.clear()
        shutil.rmtree(project, ignore_errors=True)


def test_lock_file_pins_every_dependency_with_hashes():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (REPO / "requirements.lock").read_text()
    pinned = {line.split("==")[0].strip().lower() for line in lock.splitlines() if "==" in line}
    for dep in deps:
        name = dep.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        assert name in pinned, name
    blocks = [b for b in lock.split("\n") if "==" in b]
    assert all(b.rstrip().endswith("\\") for b in blocks), "every pin carries --hash lines"
    assert "file://" not in lock and "/opt/" not in lock  # stands alone: no local indexes
