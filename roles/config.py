"""Where the deploy's settings come from, so that a redeploy from a new shell changes nothing.

    deploy.env    checked in: the non-secret deploy settings (host, domain, ACME email, upstream,
                  timeouts...). A secret name in it stops the deploy.
    secrets.env   ignored by git (mode 0600 wanted): the secrets (DATABASE_URL, tokens, REDIS_PASSWORD).
    environment   wins over both files (one-off overrides; CI).

Both files are `NAME=value` lines, read by python-dotenv's parser (`#` comments, a ` # comment`
after a value, optional `export `, optional quotes around the value). `SEATWATCH_DEPLOY_ENV` /
`SEATWATCH_SECRETS_ENV` point at other files. inventory.py and roles/common.py load them at import
(into os.environ, never overriding what is set), and `make dry-run` prints the effective settings
with every secret masked, then every problem with them (`python -m roles.preflight`).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from urllib.parse import urlsplit

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


# Read by inventory.py, scripts/ops.py and roles.config (not by the app): name -> default shown.
LAPTOP = {"SEATWATCH_HOST": "", "SEATWATCH_WORKERS": "", "SEATWATCH_SSH_USER": "ubuntu",
          "SEATWATCH_SSH_KEY": "", "SEATWATCH_SSH_PORT": "22", "SEATWATCH_SSH_KNOWN_HOSTS": "",
          "SEATWATCH_DEPLOY_ENV": "", "SEATWATCH_SECRETS_ENV": "", "SEATWATCH_CHECK_DOMAIN": "",
          "REDIS_PASSWORD": ""}
# The app's settings that the deploy never sends to a server (dev mode's, and the release id the
# deploy sets itself): left out of the deploy's table.
DEV_ONLY = ("SEATWATCH_ENV", "SEATWATCH_SCRAPER", "SEATWATCH_MAILER", "SEATWATCH_OUTBOX_DIR",
            "SEATWATCH_SIM_PERIOD_SECONDS", "SEATWATCH_RELEASE")


def deploy_defaults() -> dict[str, str]:
    """name -> default, for every setting the deploy's table shows."""
    from app.settings import OPTIONAL

    out = dict(LAPTOP)
    out.update({env: str(default) for env, default, _ in DEFAULTS.values() if env})
    out.update({n: v for n, v in OPTIONAL.items() if n not in DEV_ONLY})
    return out


def required_names(environ) -> list[str]:
    from app.settings import REQUIRED

    names = ["SEATWATCH_HOST", "SEATWATCH_DOMAIN", *REQUIRED]
    if local_redis(environ):
        names.append("REDIS_PASSWORD")
    if environ.get("SEATWATCH_SITE_SOURCE", "").strip():  # the site's build (roles/sitebuild.py BUILD_VARS)
        names += ["NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_ANON_KEY"]
    return names


def local_redis(environ) -> bool:
    """As roles.common.local_redis decides for the primary."""
    mode = environ.get("SEATWATCH_REDIS", "auto").strip().lower() or "auto"
    if mode in ("off", "0", "false", "no"):
        return False
    url = environ.get("REDIS_URL", "").strip()
    if mode in ("on", "1", "true", "yes") or not url:
        return True
    try:
        return urlsplit(url).hostname in (None, "", "localhost", "127.0.0.1", "::1")
    except ValueError:
        return False  # malformed: roles.preflight reports it, by the app's own check


class DeployError(Exception):
    """A deploy that cannot go ahead (missing or invalid settings). Here, below roles.common and
    roles.distro, so that both raise it without importing each other."""


class SettingsFileError(RuntimeError):
    pass


_loaded: dict[str, str] = {}  # name -> file it was loaded from into os.environ, in this process


def parse_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines as the shell and Docker read them, by python-dotenv's parser: `#` comments,
    ` # comment` after a value, `export `, single or double quotes (a `#` inside quotes, or with no
    space before it, is part of the value). No `${VAR}` expansion: a `$` in a secret stays a `$`.
    A line it cannot read stops the deploy, naming the file and line, never the value."""
    from dotenv.parser import parse_stream

    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.key is None and not binding.error:
                continue  # a blank or comment line
            if binding.error or binding.value is None or not binding.key.replace("_", "").isalnum():
                raise SettingsFileError(f"{path.name}:{binding.original.line}: expected NAME=value")
            out[binding.key] = binding.value.strip()
    return out


def parse_env_text(text: str) -> dict[str, str]:
    """`NAME=value` lines given as text (the server's env file, read over ssh), as parse_env_file reads a file."""
    import io

    from dotenv.parser import parse_stream

    return {b.key: (b.value or "").strip() for b in parse_stream(io.StringIO(text)) if b.key and not b.error}


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
    names += [*REQUIRED, *[n for n in OPTIONAL if n not in DEV_ONLY], "REDIS_PASSWORD"]
    names += ["NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_ANON_KEY"]  # the site's build (roles/sitebuild.py)
    defaults = {n: v for n, v in deploy_defaults().items() if v != ""}
    required = set(required_names(environ))
    rows = []
    for name in dict.fromkeys(names):
        value = environ.get(name, "").strip()
        if value:
            rows.append((name, mask(name, value), sources.get(name, "environment")))
        elif name in required:
            rows.append((name, "MISSING", "required"))
        else:
            rows.append((name, defaults.get(name, ""), "default" if name in defaults else "unset"))
    return rows


def table() -> int:
    """Print the effective settings, secrets masked; 2 when a settings file cannot be read."""
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


main = table  # `python -m roles.config`: the table alone; `python -m roles.preflight` checks them too


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    from roles.config import main as _main  # one module instance (roles.common imports it too)

    sys.exit(_main())
