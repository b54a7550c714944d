"""Where the deploy's settings come from, so that a redeploy from a new shell changes nothing.

    deploy.env    checked in: the non-secret deploy settings (host, domain, ACME email, upstream,
                  timeouts...). A secret name in it stops the deploy.
    secrets.env   ignored by git (mode 0600 wanted): the secrets (DATABASE_URL, tokens, REDIS_PASSWORD).
    environment   wins over both files (one-off overrides; CI).

Both files are `NAME=value` lines (`#` comments, optional `export `, optional quotes around the
value). `SEATWATCH_DEPLOY_ENV` / `SEATWATCH_SECRETS_ENV` point at other files. inventory.py and
roles/common.py load them at import (into os.environ, never overriding what is set), and
`make dry-run` prints the effective settings with every secret masked (`python -m roles.config`).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# Values that are secrets wherever they appear: masked in every printout, refused in deploy.env.
SECRET_NAMES = ("DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", "SCRAPER_SECRET_TOKEN", "RESEND_API_KEY",
                "CRON_SECRET", "SUPABASE_SERVICE_ROLE_KEY",
                # their URLs carry tokens (a webhook's path, the ping check's id): app.alerting.notify, app.alerting.ping
                "SEATWATCH_ALERT_URLS", "SEATWATCH_PING_URL")


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


# Every deploy setting: data key -> (environment variable or None, default, converter). roles.common.cfg
# reads them (host data, then the variable, then the default); `make dry-run` prints them.
DEFAULTS: dict[str, tuple[str | None, object, object]] = {
    "base_timezone": ("SEATWATCH_TIMEZONE", "UTC", str),
    "base_locale": ("SEATWATCH_LOCALE", "C.UTF-8", str),
    "base_swap_mb": ("SEATWATCH_SWAP_MB", "auto", str),  # auto: 1024 MB on hosts with < 2 GB RAM
    "firewall_mode": ("SEATWATCH_FIREWALL", "auto", str),  # auto | iptables | off
    "redis_enabled": ("SEATWATCH_REDIS", "auto", str),  # auto: on unless REDIS_URL points elsewhere
    "redis_package": ("SEATWATCH_REDIS_PACKAGE", "redis", str),  # redis | valkey (BSD; Debian 13, Ubuntu 26.04)
    # "-" marks an optional address (Redis 6.2+); for Redis 6.0 the role drops the optional ones
    "redis_bind": ("SEATWATCH_REDIS_BIND", "127.0.0.1 -::1", str),
    "redis_port": ("SEATWATCH_REDIS_PORT", 6379, int),
    "redis_maxmemory": ("SEATWATCH_REDIS_MAXMEMORY", "128mb", str),
    "app_user": ("SEATWATCH_APP_USER", "seatwatch", str),
    "app_root": ("SEATWATCH_APP_ROOT", "/opt/seatwatch", str),
    "app_port": ("SEATWATCH_APP_PORT", 8080, int),
    "app_keep_releases": ("SEATWATCH_KEEP_RELEASES", 3, int),
    "app_bootstrap_schema": ("SEATWATCH_BOOTSTRAP_SCHEMA", False, _bool),  # tests/sandbox only
    "app_health_timeout": ("SEATWATCH_HEALTH_TIMEOUT", 90, int),
    # on: the primary's worker runs the periodic scheduler; off: no scheduler anywhere (cutover)
    "app_scheduler": ("SEATWATCH_SCHEDULER", "on", str),
    "pm2_version": ("SEATWATCH_PM2_VERSION", "auto", str),
    "caddy_domain": ("SEATWATCH_DOMAIN", "", str),
    "caddy_tls": ("SEATWATCH_TLS", "acme", str),  # acme | internal (local CA: sandbox/tests)
    "caddy_email": ("SEATWATCH_ACME_EMAIL", "", str),
    # more names served by the same site, e.g. vps.example.com pointed at the VPS before the main name
    # moves: a valid certificate to verify with before the DNS switch (docs/runbook.md)
    "caddy_extra_domains": ("SEATWATCH_EXTRA_DOMAINS", "", str),
    "caddy_site_upstream": ("SEATWATCH_SITE_UPSTREAM", "", str),
    # The Next.js site on the VPS (roles/site.py, roles/sitebuild.py): the laptop's checkout of it; unset: no site
    "site_source": ("SEATWATCH_SITE_SOURCE", "", str),
    "site_build_dir": ("SEATWATCH_SITE_BUILD_DIR", ".site-build", str),  # the laptop's cache of built artifacts
    "site_install_scripts": ("SEATWATCH_SITE_INSTALL_SCRIPTS", False, _bool),  # the site's packages' install scripts
    "site_secrets_env": ("SEATWATCH_SITE_SECRETS_ENV", "site-secrets.env", str),  # the site's server-side secrets
    "site_user": ("SEATWATCH_SITE_USER", "seatwatch-site", str),
    "site_root": ("SEATWATCH_SITE_ROOT", "/opt/seatwatch-site", str),
    "site_port": ("SEATWATCH_SITE_PORT", 3000, int),
    "site_heap_mb": ("SEATWATCH_SITE_HEAP_MB", 192, int),  # node --max-old-space-size
    "site_max_memory_mb": ("SEATWATCH_SITE_MAX_MEMORY_MB", 320, int),  # PM2's max_memory_restart
}


class DeployError(Exception):
    """A deploy that cannot go ahead (missing or invalid settings). Here, below roles.common and
    roles.distro, so that both raise it without importing each other."""


class SettingsFileError(RuntimeError):
    pass


_loaded: dict[str, str] = {}  # name -> file it was loaded from into os.environ, in this process


def parse_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.replace("_", "").isalnum():
            raise SettingsFileError(f"{path.name}:{n}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name] = value
    return out


def settings_files(project: Path = PROJECT) -> tuple[Path, Path]:
    deploy_env = Path(os.environ.get("SEATWATCH_DEPLOY_ENV") or project / "deploy.env")
    secrets_env = Path(os.environ.get("SEATWATCH_SECRETS_ENV") or project / "secrets.env")
    return deploy_env, secrets_env


def load_settings_files(project: Path = PROJECT, environ=None) -> dict[str, str]:
    """Fill `environ` (os.environ) from secrets.env, then deploy.env, without overriding anything set.
    Returns name -> source ("environment", "secrets.env", "deploy.env") of every name the files know."""
    environ = os.environ if environ is None else environ
    deploy_env, secrets_env = settings_files(project)
    sources: dict[str, str] = {}
    layers = []
    if secrets_env.is_file():
        mode = stat.S_IMODE(secrets_env.stat().st_mode)
        if mode & 0o077:
            print(f"warning: {secrets_env} is readable by others (mode {mode:o}); chmod 600 it",
                  file=sys.stderr)
        layers.append((secrets_env.name, parse_env_file(secrets_env)))
    if deploy_env.is_file():
        values = parse_env_file(deploy_env)
        leaked = [k for k in values if k in SECRET_NAMES and values[k]]
        if leaked:
            raise SettingsFileError(f"{deploy_env.name} is checked in: move {', '.join(leaked)} "
                                    f"to {secrets_env.name} (ignored by git) or the environment")
        layers.append((deploy_env.name, values))
    for source, values in layers:
        for name, value in values.items():
            if name in sources:
                continue
            if environ is os.environ and name in _loaded:
                sources[name] = _loaded[name]
            elif environ.get(name, "").strip():
                sources[name] = "environment"
            elif value:
                environ[name] = value
                sources[name] = source
                if environ is os.environ:
                    _loaded[name] = source
    return sources


def mask(name: str, value: str) -> str:
    if not value:
        return ""
    if name in SECRET_NAMES:
        return f"*** ({len(value)} characters)"
    return value


def effective_settings(environ=None) -> list[tuple[str, str, str]]:
    """(name, shown value, source) of every deploy and service setting, secrets masked."""
    from app.settings import OPTIONAL, REQUIRED

    environ = os.environ if environ is None else environ
    sources = load_settings_files(environ=environ)
    names = ["SEATWATCH_HOST", "SEATWATCH_WORKERS", "SEATWATCH_SSH_USER", "SEATWATCH_SSH_KEY",
             "SEATWATCH_SSH_PORT", "SEATWATCH_SSH_KNOWN_HOSTS"]
    names += [env for env, _, _ in DEFAULTS.values() if env]
    names += [*REQUIRED, *[n for n in OPTIONAL if n != "SEATWATCH_RELEASE"], "REDIS_PASSWORD"]
    names += ["NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_ANON_KEY"]  # the site's build (roles/sitebuild.py)
    defaults = {env: str(default) for env, default, _ in DEFAULTS.values() if env}
    defaults.update({n: v for n, v in OPTIONAL.items()})
    rows = []
    for name in dict.fromkeys(names):
        value = environ.get(name, "").strip()
        if value:
            rows.append((name, mask(name, value), sources.get(name, "environment")))
        else:
            rows.append((name, defaults.get(name, ""), "default" if name in defaults else "unset"))
    return rows


def main() -> int:
    try:
        rows = effective_settings()
    except SettingsFileError as exc:
        print(f"deploy stopped: {exc}", file=sys.stderr)
        return 2
    print("Effective deploy settings (secrets masked):")
    width = max(len(n) for n, _, _ in rows)
    for name, value, source in rows:
        print(f"  {name:<{width}}  {value or '-':<40}  [{source}]")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    from roles.config import main as _main  # one module instance (roles.common imports it too)

    sys.exit(_main())
