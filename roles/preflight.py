"""The deploy's settings checked on the laptop before any connection (`make dry-run`, `make deploy`).

Everything that can be known without the host is checked here, by the same code the server runs
(app.settings, app.connection_urls): every missing required setting at once, every malformed value
naming its variable and never quoting it, and names in deploy.env / secrets.env (or SEATWATCH_*
variables in the environment) that no part of the service reads, with the closest known name
(`RESEND_APIKEY` -> `RESEND_API_KEY`). An unreachable host is then the only thing left for ssh to
say. No pyinfra here: host data overrides are checked again by the roles at deploy time.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Mapping

from app.settings import OPTIONAL, REQUIRED, Settings, SettingsError
from roles.config import DEFAULTS, DEV_ONLY, LAPTOP, required_names, table

# Read by tests, benches and tools, never by a deploy; known so that they are not called typos.
OTHER_KNOWN = ("SEATWATCH_HOSTNAME", "SEATWATCH_TEST_ARCH", "SEATWATCH_TEST_DB", "BENCH_QUICK", "BENCH_FULL",
               "SEATWATCH_TEST_SITE_CACHE")

# Valid stand-ins for the required settings: each set value is validated alone against them, so
# every malformed one is reported, not only the first.
_VALID = {"DATABASE_URL": "postgresql://u@127.0.0.1:5432/db", "SCRAPER_URL": "https://scraper.invalid",
          "SCRAPER_SECRET_TOKEN": "x", "RESEND_API_KEY": "x", "NOTIFICATION_FROM_EMAIL": "a@example.com",
          "NEXT_PUBLIC_SITE_URL": "https://site.invalid", "CRON_SECRET": "x", "SUPABASE_SERVICE_ROLE_KEY": "x"}


def known_names() -> set[str]:
    from roles.sitebuild import BUILD_VARS  # the site's public build variables (with SEATWATCH_SITE_SOURCE)

    return ({env for env, _, _ in DEFAULTS.values() if env} | set(REQUIRED) | set(OPTIONAL) | set(LAPTOP)
            | set(OTHER_KNOWN) | set(BUILD_VARS))


def site_problems(environ: Mapping[str, str]) -> list[str]:
    """With SEATWATCH_SITE_SOURCE: the site's build variables (missing, placeholder: named, never quoted)."""
    from roles.sitebuild import SiteBuildError, build_variables

    if not environ.get("SEATWATCH_SITE_SOURCE", "").strip():
        return []
    try:
        build_variables(environ)
    except SiteBuildError as exc:
        return [str(exc)]
    return []


def unknown_names(names_and_sources: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """A line per name nobody reads: in a settings file, or a SEATWATCH_* variable in the environment."""
    known = known_names()
    candidates = dict(names_and_sources)
    candidates.update({n: "the environment" for n in environ if n.startswith("SEATWATCH_") and n not in candidates})
    out = []
    for name, source in sorted(candidates.items()):
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        out.append(f"unknown setting {name} in {source}" + (f" (did you mean {close[0]}?)" if close else ""))
    return out


def malformed(environ: Mapping[str, str]) -> list[str]:
    """A line per set value that the deploy or the app would refuse, naming the variable only."""
    out = []
    for key, (env, default, convert) in DEFAULTS.items():
        raw = environ.get(env or "", "").strip()
        if env and raw and convert is int:
            try:
                int(raw)
            except ValueError:
                out.append(f"{env} must be a whole number")
    port = environ.get("SEATWATCH_SSH_PORT", "").strip()
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        out.append("SEATWATCH_SSH_PORT must be a port number")
    scheduler = environ.get("SEATWATCH_SCHEDULER", "").strip().lower()
    if scheduler and scheduler not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        out.append("SEATWATCH_SCHEDULER must be on or off")
    for name in [*REQUIRED, *OPTIONAL]:
        value = environ.get(name, "")
        if not value.strip() or name in DEV_ONLY or name == "SEATWATCH_SCHEDULER":
            continue
        try:
            Settings.from_env({**_VALID, name: value})
        except SettingsError as exc:
            out.append(str(exc))
        except Exception:  # noqa: BLE001  a check that itself fails must still name the variable
            out.append(f"{name} is not valid")
    return out


def problems(environ: Mapping[str, str] | None = None, sources: Mapping[str, str] | None = None) -> list[str]:
    """Everything wrong with the deploy's settings, one line each; [] when a deploy may go ahead."""
    environ = os.environ if environ is None else environ
    missing = [n for n in required_names(environ) if not environ.get(n, "").strip()]
    out = [f"missing required setting(s): {', '.join(missing)}"] if missing else []
    return out + malformed(environ) + site_problems(environ) + unknown_names(sources or {}, environ)


def main() -> int:
    """`make dry-run`: the settings table, then every problem with them (exit 2 when any): before ssh."""
    from roles.config import SettingsFileError, load_settings_files

    try:
        code = table()
        sources = load_settings_files()
    except SettingsFileError as exc:
        print(f"deploy stopped: {exc}", file=sys.stderr)
        return 2
    found = problems(os.environ, {n: s for n, s in sources.items() if s != "environment"})
    for line in found:
        print(f"deploy stopped: {line}", file=sys.stderr)
    return 2 if found or code else 0


if __name__ == "__main__":
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from roles.preflight import main as _main  # one module instance

    sys.exit(_main())
