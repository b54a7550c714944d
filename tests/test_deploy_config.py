"""Fast checks of the deploy bundle that need no host (the real deploy is tests/test_deploy.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).parent / "pyinfra")

GOOD_ENV = {
    "DATABASE_URL": "postgresql://u@db.example:5432/postgres",
    "SCRAPER_URL": "https://scraper.example",
    "SCRAPER_SECRET_TOKEN": "t",
    "RESEND_API_KEY": "re_x",
    "NOTIFICATION_FROM_EMAIL": "alerts@example.com",
    "NEXT_PUBLIC_SITE_URL": "https://site.example",
    "CRON_SECRET": "c",
    "SUPABASE_SERVICE_ROLE_KEY": "s",
    "REDIS_PASSWORD": "p",
    "SEATWATCH_DOMAIN": "api.example.com",
}


def plan(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`pyinfra --dry` against @local: the environment check runs before any fact or operation."""
    base = {k: v for k, v in os.environ.items()
            if k not in GOOD_ENV and k not in ("REDIS_URL", "RESEND_API_URL") and not k.startswith("SEATWATCH_")}
    return subprocess.run([PYINFRA, "--dry", "inventory.py", "deploy.py"], cwd=REPO,
                          env={**base, "SEATWATCH_HOST": "@local", **env},
                          capture_output=True, text=True, timeout=120)


def test_missing_variables_stop_the_deploy_naming_every_one():
    env = {k: v for k, v in GOOD_ENV.items() if k not in ("CRON_SECRET", "RESEND_API_KEY", "REDIS_PASSWORD")}
    cp = plan(env)
    assert cp.returncode != 0
    line = next(l for l in (cp.stdout + cp.stderr).splitlines() if "missing environment variable" in l)
    named = line.split(":", 2)[-1].replace(" ", "").split(",")
    assert sorted(named) == ["CRON_SECRET", "REDIS_PASSWORD", "RESEND_API_KEY"]


def test_managed_redis_needs_no_password_but_a_url():
    env = {k: v for k, v in GOOD_ENV.items() if k != "REDIS_PASSWORD"}
    cp = plan(env)  # no REDIS_URL either: the local Redis needs its password
    assert "REDIS_PASSWORD" in cp.stdout + cp.stderr
    cp = plan({**env, "REDIS_URL": "rediss://default:x@eu1.upstash.io:6379", "SCRAPER_URL": "scraper.example"})
    out = cp.stdout + cp.stderr
    assert "REDIS_PASSWORD" not in out and "invalid settings" in out and "SCRAPER_URL" in out


def test_inventory_needs_a_host():
    cp = subprocess.run([PYINFRA, "--dry", "inventory.py", "deploy.py"], cwd=REPO,
                        env={k: v for k, v in os.environ.items() if k != "SEATWATCH_HOST"},
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode != 0 and "SEATWATCH_HOST" in cp.stdout + cp.stderr


def _release_id(project: Path, monkeypatch) -> str:
    from roles import common

    monkeypatch.setattr(common, "PROJECT", project)
    common._bundle_cache.clear()
    try:
        return common.release_bundle()[0]
    finally:
        common._bundle_cache.clear()


def test_release_id_follows_the_content_only(tmp_path, monkeypatch):
    for entry in ("pyproject.toml", "app"):
        src = REPO / entry
        (shutil.copytree(src, tmp_path / entry, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, tmp_path / entry))
    first = _release_id(tmp_path, monkeypatch)
    assert _release_id(tmp_path, monkeypatch) == first
    os.utime(tmp_path / "app" / "settings.py", (1, 1))  # mtimes do not matter
    (tmp_path / "app" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "app" / "__pycache__" / "x.pyc").write_bytes(b"junk")  # nor bytecode
    assert _release_id(tmp_path, monkeypatch) == first
    with open(tmp_path / "app" / "settings.py", "a") as fh:
        fh.write("\n# a change\n")
    assert _release_id(tmp_path, monkeypatch) != first


def test_every_template_says_it_is_managed_by_pyinfra():
    templates = sorted((REPO / "templates").glob("*.j2"))
    assert {t.name for t in templates} >= {"Caddyfile.j2", "ecosystem.config.js.j2", "app.env.j2", "redis.conf.j2"}
    for t in templates:
        head = t.read_text().splitlines()[:2]
        assert any("managed by pyinfra" in line for line in head), t.name


def _render(name: str, **data) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(**data)


@pytest.mark.parametrize("primary", [True, False])
def test_ecosystem_runs_web_only_on_the_primary_and_one_scheduler(primary):
    js = _render("ecosystem.config.js.j2", run="/opt/seatwatch/bin/run", root="/opt/seatwatch",
                 web=primary, scheduler=primary, port=8080, kill_timeout=150000, web_kill_timeout=15000,
                 consumer_timeout=120)
    assert ('name: "web"' in js) is primary
    assert ('"--no-scheduler"' in js) is (not primary)
    assert "kill_timeout: 150000" in js
    if shutil.which("node"):  # it is valid JavaScript
        cp = subprocess.run(["node", "-e", f"const m = {{exports: {{}}}}; (function(module) {{ {js} }})(m);"
                                           "console.log(m.exports.apps.map(a => a.name).join(','))"],
                            capture_output=True, text=True)
        assert cp.stdout.strip() == ("web,worker" if primary else "worker"), cp.stderr


def test_caddyfile_proxies_only_the_service_routes_unless_an_upstream_is_set():
    plain = _render("Caddyfile.j2", domain="api.example.com", http_names="http://api.example.com",
                    tls_internal=False, email="", upstream="", port=8080)
    assert "@service path /api/monitoring/* /api/cron /api/metrics" in plain
    assert "reverse_proxy 127.0.0.1:8080" in plain and 'respond "Not found" 404' in plain
    assert "tls internal" not in plain
    site = _render("Caddyfile.j2", domain="api.example.com", http_names="http://api.example.com",
                   tls_internal=True, email="a@b.c", upstream="https://site.example", port=8080)
    assert "reverse_proxy https://site.example" in site and "tls internal" in site and "email a@b.c" in site


def test_caddyfile_bounds_the_service_routes_like_waitress_and_names_no_server():
    """The body limit Caddy applies is waitress's own (app/web/serving.py), by Content-Length and by reading."""
    import re

    from app.web import serving

    text = _render("Caddyfile.j2", domain="a.example, b.example", http_names="http://a.example, http://b.example",
                   tls_internal=False, email="", upstream="", port=8080)
    service = text.split("handle @service {", 1)[1].split("\n\t}\n", 1)[0]
    pattern = re.search(r"@too_large header_regexp Content-Length (\S+)", service).group(1)
    limit = serving.MAX_BODY_BYTES
    assert re.match(pattern, str(limit)) and re.match(pattern, "0" + str(limit * 5000))
    assert not re.match(pattern, str(limit - 1)) and not re.match(pattern, "12")
    assert f"max_size {limit - 1}" in service and "413" in service
    assert service.index("@too_large") < service.index("reverse_proxy")
    assert text.count("header -Server") == 2  # the HTTPS site and the port-80 redirect
    assert "http://a.example, http://b.example {" in text
    for bound in ("read_header", "read_body", "idle", "max_header_size", "max_conns_per_host"):
        assert bound in text, bound


def test_the_unsubscribe_key_reaches_the_env_file_byte_for_byte(monkeypatch):
    """The site signs and verifies unsubscribe tokens with the key exactly as it has it."""
    from roles import common

    monkeypatch.setattr(common, "local_redis", lambda: True)
    monkeypatch.setattr(common, "is_primary", lambda: True)
    monkeypatch.setattr(common, "cfg", lambda name: {"caddy_domain": "api.example.com",
                                                     "redis_port": 6379}.get(name))
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", " key-with-spaces \t")
    monkeypatch.setenv("CRON_SECRET", "  cron  ")
    env = common.app_environment()
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == " key-with-spaces \t"
    assert env["CRON_SECRET"] == "cron"  # the others are still trimmed


@pytest.mark.parametrize("url", [
    "redis://:pa#ss@redis.managed.example:6379/0",  # an unescaped "#": once read as local
    "redis://:secret@:6379/0",  # no host
    "redis://:secret@redis.managed.example:99999/0",  # no such port
    "redis://:secret@redis.managed.example:6379/zero",
])
def test_a_redis_url_the_deploy_cannot_parse_is_refused_naming_the_variable(url, monkeypatch):
    """Never silently replaced by the local Redis (issue 27); the message names REDIS_URL only."""
    from roles import common

    monkeypatch.setattr(common, "is_primary", lambda: True)
    monkeypatch.setattr(common, "cfg", lambda name: {"redis_enabled": "auto"}.get(name))
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(common.DeployError) as refused:
        common.local_redis()
    message = str(refused.value)
    assert "REDIS_URL" in message
    assert "secret" not in message and "pa#ss" not in message and "managed" not in message


@pytest.mark.parametrize("url, local", [
    ("redis://:pa%23ss@redis.managed.example:6379/0", False),
    ("rediss://default:pw@redis.managed.example:6380", False),
    ("redis://:pw@127.0.0.1:6379/0", True),
    ("redis://:pw@localhost:6379/0", True),
    ("", True),
])
def test_a_well_formed_redis_url_decides_local_or_managed(url, local, monkeypatch):
    from roles import common

    monkeypatch.setattr(common, "is_primary", lambda: True)
    monkeypatch.setattr(common, "cfg", lambda name: {"redis_enabled": "auto"}.get(name))
    monkeypatch.setenv("REDIS_URL", url)
    assert common.local_redis() is local
