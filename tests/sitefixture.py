"""The site fixture (tests/fixtures/site) as an operator's checkout of the site, for the deploy tests.

The commits are made with fixed names and dates, so the same fixture makes the same commit on every run:
the laptop build's key (roles/sitebuild.py) is then the same, and a build cached in SITE_BUILD_CACHE from an
earlier run is reused (the deploy test's build costs `npm ci` + `next build` once per machine and change).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "site"
SITE_BUILD_CACHE = Path(os.environ.get("SEATWATCH_TEST_SITE_CACHE")
                        or Path(__file__).resolve().parent.parent / ".testhost" / "site-build")
PUBLIC_VARS = {"NEXT_PUBLIC_SUPABASE_URL": "https://fixtureproject.supabase.co",
               "NEXT_PUBLIC_SUPABASE_ANON_KEY": "eyJhbGciOiJIUzI1NiJ9.fixture-anon-key.sig"}
SERVER_SECRET = "fixture-server-secret-0f3a"  # the site's server-side secret (site-secrets.env)
_GIT_ENV = {"GIT_AUTHOR_NAME": "fixture", "GIT_AUTHOR_EMAIL": "fixture@seatwatch.invalid",
            "GIT_COMMITTER_NAME": "fixture", "GIT_COMMITTER_EMAIL": "fixture@seatwatch.invalid",
            "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}

# A release whose page answers 500: the page throws on every request (a bad commit of the site).
BROKEN_PAGE = """
export const dynamic = "force-dynamic";

export default function Home() {
  throw new Error("deliberately broken site release (deploy test)");
}
"""


def _git(dest: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(dest), *args], check=True, capture_output=True,
                   env={**os.environ, **_GIT_ENV})


def checkout(dest: Path, broken: bool = False) -> Path:
    """A git checkout of the fixture at `dest` (one commit; a second one with the broken page if asked)."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("node_modules", ".next"))
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "site fixture")
    if broken:
        (dest / "app" / "page.js").write_text(BROKEN_PAGE)
        _git(dest, "commit", "-q", "-am", "a page that answers 500")
    return dest


def secrets_file(dest: Path) -> Path:
    dest.write_text(f"FIXTURE_SERVER_SECRET={SERVER_SECRET}\n")
    dest.chmod(0o600)
    return dest
