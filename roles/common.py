"""Shared helpers of the roles: settings with defaults, the operator's environment, the release bundle.

Every setting is a pyinfra data key prefixed with its role. A value set in the inventory's host
data wins; otherwise the operator's environment variable named in roles.config.DEFAULTS (the names
docs/deploy.md lists); otherwise the default there. Secrets are only read here, from the
environment of the laptop that runs pyinfra, and rendered into the 0600 env file on the server.
roles.config knows nothing of pyinfra: `make dry-run` prints the settings without it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from pyinfra import host

PROJECT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT / "templates"
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from app.settings import OPTIONAL, REQUIRED, Settings, SettingsError  # noqa: E402  one list of names
from roles.config import DEFAULTS, DeployError, load_settings_files  # noqa: E402

load_settings_files()  # deploy.env (checked in) and secrets.env (ignored) under the environment


def cfg(key: str):
    value = host.data.get(key)
    if value is not None:
        return value
    env_name, default, convert = DEFAULTS[key]
    raw = os.environ.get(env_name, "").strip() if env_name else ""
    try:
        return convert(raw) if raw else default
    except ValueError:  # Python's message would quote the value
        raise DeployError(f"{env_name} must be a {'whole number' if convert is int else 'valid value'}") from None


def python_for_host() -> tuple[str, list[str]]:
    """(interpreter for the virtualenv, its apt packages). The app needs Python 3.11+: python3 on every
    supported system but Ubuntu 22.04 (3.10), which has python3.11 in universe (roles/distro.py)."""
    from roles.distro import host_distro

    distro = host_distro()
    return distro.python, list(distro.python_packages)


def is_primary() -> bool:
    return host.data.get("seatwatch_role", "primary") == "primary"


def site_enabled() -> bool:
    """The Next.js site is deployed on the primary when SEATWATCH_SITE_SOURCE names the laptop's checkout
    (roles/site.py); its Node.js needs 20.9+ (roles/node.py)."""
    return bool(str(cfg("site_source")).strip()) and is_primary()


# Root's own places (root:root 0755, never writable by the app user): what root executes or writes.
BIN_DIR = "/usr/local/lib/seatwatch"  # run, activate, ecosystem.config.js
STATE_DIR = "/var/lib/seatwatch"  # active (the gate's marker), gated/<release>, deploy.lock, uploads/
LOG_DIR = "/var/log/seatwatch"  # activate.log, deploys.log (audit)
ENV_DIR = "/etc/seatwatch"  # app.env, root:<app user> 0640: the app user reads it, cannot change it


def app_paths() -> dict[str, str]:
    """The app user owns `releases` (and its home); everything else here is root's (docs/deploy.md, "Who owns what")."""
    root = cfg("app_root")
    return {
        "root": root,
        "releases": f"{root}/releases",
        "current": f"{root}/current",
        "env_file": f"{ENV_DIR}/app.env",
        "bin": BIN_DIR,
        "run": f"{BIN_DIR}/run",
        "activate": f"{BIN_DIR}/activate",
        "ecosystem": f"{BIN_DIR}/ecosystem.config.js",
        "state": STATE_DIR,
        "marker": f"{STATE_DIR}/active",
        "gated": f"{STATE_DIR}/gated",
        "uploads": f"{STATE_DIR}/uploads",
        "logs": LOG_DIR,
        "activate_log": f"{LOG_DIR}/activate.log",
        "home": f"/home/{cfg('app_user')}",
    }


def _redis_is_local(url: str) -> bool:
    # Parsed by the app's own check first: a password with an unescaped "#" once read as a URL with
    # no host, that is a local one, and the managed Redis was silently replaced by the local one.
    from app.connection_urls import InvalidURL, check_redis_url

    try:
        check_redis_url(url)
    except InvalidURL as exc:
        raise DeployError(str(exc)) from None
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    if not parts.hostname:
        raise DeployError("REDIS_URL names no host (expected redis://[USER]:PASSWORD@HOST:PORT/DB, "
                          "special characters in the password percent-encoded; the value is not shown)")
    return parts.hostname in ("localhost", "127.0.0.1", "::1")


def local_redis() -> bool:
    """Whether this host gets the redis role (the primary, unless REDIS_URL points elsewhere)."""
    mode = cfg("redis_enabled").lower()
    if not is_primary() or mode in ("off", "0", "false", "no"):
        return False
    if mode in ("on", "1", "true", "yes"):
        return True
    url = os.environ.get("REDIS_URL", "").strip()
    return not url or _redis_is_local(url)


VERBATIM = ("SUPABASE_SERVICE_ROLE_KEY",)


def app_environment() -> dict[str, str]:
    """The service's environment for the env file, from the operator's; fails naming every missing name."""
    # The unsubscribe signing key goes to the server byte for byte: the site signs and verifies
    # with it exactly as given, so a stripped copy would make tokens the site rejects.
    env = {name: os.environ.get(name, "") if name in VERBATIM else os.environ.get(name, "").strip()
           for name in [*REQUIRED, *OPTIONAL]}
    missing = [name for name in REQUIRED if not env[name].strip()]
    if local_redis():
        if not os.environ.get("REDIS_PASSWORD", "").strip():
            missing.append("REDIS_PASSWORD")
    elif not env["REDIS_URL"]:
        missing.append("REDIS_URL")
    if is_primary() and not cfg("caddy_domain"):
        missing.append("SEATWATCH_DOMAIN")
    if missing:
        raise DeployError("missing environment variable(s) for the deploy: " + ", ".join(missing))
    if local_redis():
        password = quote(os.environ["REDIS_PASSWORD"].strip(), safe="")
        env["REDIS_URL"] = f"redis://:{password}@127.0.0.1:{cfg('redis_port')}/0"
    env = {k: v for k, v in env.items() if v}
    env["SEATWATCH_ENV"] = "production"  # the server refuses the dev stand-ins, whatever the laptop had
    # Every host of this inventory records its checks under one name; a second deployment on the same
    # database (another inventory, another primary) is told apart by it (app.db.checkers).
    env.setdefault("SEATWATCH_INSTANCE", f"{env.get('SEATWATCH_NAME') or 'seatwatch'}@"
                                         f"{os.environ.get('SEATWATCH_HOST', '').strip() or 'primary'}")
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise DeployError(f"{name} contains a newline")
    try:
        Settings.from_env(env)  # the app's own validation, before anything is changed
    except SettingsError as exc:
        raise DeployError(f"invalid settings: {exc}") from None
    return dict(sorted(env.items()))


def redis_password() -> str:
    return os.environ["REDIS_PASSWORD"].strip()


# --------------------------------------------------------------------------- rendering and timeouts

def render(name: str, **data) -> str:
    """A template of templates/ rendered here, on the laptop (StrictUndefined: a typo fails the deploy).
    Roles compare or upload the text themselves, so secrets never go through pyinfra's diff or /tmp."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template(name).render(**data)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


WEB_KILL_TIMEOUT_S = 15  # waitress: in-flight requests finish (docs/health.md)
KILL_MARGIN_S = 30  # PM2's kill_timeout above the consumer's own bound
UNIT_MARGIN_S = 30  # systemd's TimeoutStopSec above PM2 stopping web, then the worker


def stop_timeouts(env: dict[str, str]) -> dict[str, int]:
    """Every stop bound from one figure: app.queue.worker.shutdown_timeout of the settings this deploy renders.
    consumer (huey -t) < worker kill_timeout (PM2, SIGKILL after) < pm2-<user> unit's TimeoutStopSec."""
    from app.queue import worker

    consumer = int(worker.shutdown_timeout(Settings.from_env(env)))
    kill = consumer + KILL_MARGIN_S
    return {"consumer_s": consumer, "worker_kill_ms": kill * 1000, "web_kill_ms": WEB_KILL_TIMEOUT_S * 1000,
            "unit_stop_s": kill + WEB_KILL_TIMEOUT_S + UNIT_MARGIN_S}


def scheduler_enabled() -> bool:
    """Whether this host's worker runs the periodic scheduler: the primary only, unless SEATWATCH_SCHEDULER=off."""
    value = str(cfg("app_scheduler")).strip().lower()
    if value not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise DeployError("SEATWATCH_SCHEDULER must be on or off")
    return is_primary() and value in ("on", "1", "true", "yes")


# --------------------------------------------------------------------------- the release bundle

RELEASE_FILES = ("pyproject.toml", "requirements.lock", "app")
_bundle_cache: dict[str, tuple[str, Path]] = {}


def git_revision(project: Path, paths=RELEASE_FILES) -> tuple[str | None, bool]:
    """(the last commit that touched the release files, whether they differ from it), or (None, False)
    outside a git work tree. A docs-only commit keeps the id; an uncommitted edit is named dirty."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        if git("rev-parse", "--show-toplevel") != str(project.resolve()):
            return None, False
        commit = git("log", "-1", "--format=%h", "--abbrev=10", "--", *paths)
        dirty = bool(git("status", "--porcelain", "--untracked-files=all", "--", *paths))
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return commit or None, dirty


def release_bundle() -> tuple[str, Path]:
    """(release id, local tarball path). The id names the git commit of the release files (`<commit>`,
    or `<commit>-dirty-<content hash>` for uncommitted edits; `nogit-<content hash>` outside git).
    Deterministic: same sources -> same bytes -> same id, so a rerun uploads nothing."""
    if "bundle" in _bundle_cache:
        return _bundle_cache["bundle"]
    files: list[Path] = []
    for entry in RELEASE_FILES:
        path = PROJECT / entry
        if path.is_file():
            files.append(path)
        else:
            files += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and not p.name.endswith((".pyc", ".pyo"))]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files, key=lambda p: p.relative_to(PROJECT).as_posix()):
            info = tarfile.TarInfo(path.relative_to(PROJECT).as_posix())
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(raw.getvalue()).hexdigest()
    commit, dirty = git_revision(PROJECT)
    if commit is None:
        release_id = f"nogit-{digest[:12]}"
    else:
        release_id = f"{commit}-dirty-{digest[:8]}" if dirty else commit
    out = PROJECT / "build" / f"release-{release_id}.tar.gz"
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw.getvalue())
        tmp.rename(out)
    _bundle_cache["bundle"] = (release_id, out)
    return release_id, out
