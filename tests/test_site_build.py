"""The site's laptop build (roles/sitebuild.py) on the fixture app (tests/fixtures/site): real npm, real `next build`.

The fixture is copied into a fresh git repository (as an operator's checkout of the site is); the build runs
`npm ci` from its package-lock.json and `next build` under this machine's Node, once per target architecture
for the module, and the artifact is looked into: the standalone server, the static files beside it, the
public variable baked in, the target's sharp and no other platform's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from roles import sitebuild
from roles.sitebuild import SiteBuildError, build_variables, installer

FIXTURE = Path(__file__).parent / "fixtures" / "site"
GOOD_VARS = {"NEXT_PUBLIC_SUPABASE_URL": "https://abcdefgh.supabase.co",
             "NEXT_PUBLIC_SUPABASE_ANON_KEY": "eyJhbGciOiJIUzI1NiJ9.fixture.anon",
             "NEXT_PUBLIC_SITE_URL": "https://site.seatwatch.test"}


def site_checkout(dest: Path) -> Path:
    """The fixture as an operator's checkout: a git repository with one commit, no node_modules."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("node_modules", ".next"))
    git = ["git", "-C", str(dest), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], check=True)
    return dest


def members(artifact: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(artifact) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def read_member(artifact: Path, name: str) -> str:
    with tarfile.open(artifact) as tar:
        return tar.extractfile("./" + name).read().decode()


@pytest.mark.parametrize("name", sitebuild.BUILD_VARS)
@pytest.mark.parametrize("value, why", [("", "is not set"), ("https://placeholder.supabase.co", "is a placeholder"),
                                        ("your-anon-key", "is a placeholder"), ("<site url>", "is a placeholder")])
def test_a_missing_or_placeholder_build_variable_is_refused_by_name_not_value(name, value, why):
    with pytest.raises(SiteBuildError) as err:
        build_variables({**GOOD_VARS, name: value})
    assert f"{name} {why}" in str(err.value)
    if value:
        assert value not in str(err.value)


def test_a_site_url_that_is_no_url_is_refused():
    with pytest.raises(SiteBuildError, match="NEXT_PUBLIC_SITE_URL is not an http"):
        build_variables({**GOOD_VARS, "NEXT_PUBLIC_SITE_URL": "site.seatwatch.test"})


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SiteBuildError) as err:
        build_variables({"NEXT_PUBLIC_SITE_URL": "https://ok.test"})
    assert "NEXT_PUBLIC_SUPABASE_URL is not set" in str(err.value)
    assert "NEXT_PUBLIC_SUPABASE_ANON_KEY is not set" in str(err.value)


def test_the_sites_own_lock_file_picks_the_installer(tmp_path):
    (tmp_path / "package-lock.json").write_text("{}")
    assert installer(tmp_path) == ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    assert "--ignore-scripts" not in installer(tmp_path, scripts=True)
    (tmp_path / "bun.lock").write_text("{}")  # the real site: bun.lock wins over its stale package-lock
    cmd = installer(tmp_path)
    assert f"--package=bun@{sitebuild.BUN_VERSION}" in cmd
    assert cmd[-4:] == ["bun", "install", "--frozen-lockfile", "--ignore-scripts"]
    for f in ("bun.lock", "package-lock.json"):
        (tmp_path / f).unlink()
    with pytest.raises(SiteBuildError, match="no lock file"):
        installer(tmp_path)


def test_a_source_that_is_no_git_checkout_is_refused(tmp_path):
    with pytest.raises(SiteBuildError, match="not a git checkout"):
        sitebuild.source_commit(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture built for this machine's architecture (amd64 here) and for arm64, through site_artifact."""
    src = site_checkout(tmp_path_factory.mktemp("checkout") / "site")
    out = tmp_path_factory.mktemp("builds")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEATWATCH_SITE_SOURCE", str(src))
    mp.setenv("SEATWATCH_SITE_BUILD_DIR", str(out))
    for k, v in GOOD_VARS.items():
        mp.setenv(k, v)
    sitebuild.site_artifact.cache_clear()
    results = {arch: sitebuild.site_artifact(arch) for arch in ("amd64", "arm64")}
    yield src, out, results, mp
    mp.undo()
    sitebuild.site_artifact.cache_clear()


def test_the_artifact_is_the_standalone_server_with_its_static_files(built):
    _, _, results, _ = built
    key, artifact, commit = results["amd64"]
    names = members(artifact)
    assert "server.js" in names and "package.json" in names
    assert any(n.startswith(".next/static/chunks/") for n in names), "the browser's chunks beside the server"
    assert "public/fixture.txt" in names
    assert not any(n.startswith("node_modules/typescript") for n in names), "only the traced modules ship"
    manifest = json.loads(read_member(artifact, sitebuild.MANIFEST))
    assert manifest["commit"] == commit and manifest["key"] == key and manifest["arch"] == "amd64"
    assert all(m.uid == 0 and m.uname == "" for m in names.values())


def test_the_public_variable_is_baked_into_the_server_bundle(built):
    _, _, results, _ = built
    artifact = results["amd64"][1]
    with tarfile.open(artifact) as tar:
        baked = [m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("./.next/server/")
                 and GOOD_VARS["NEXT_PUBLIC_SITE_URL"].encode() in tar.extractfile(m).read()]
    assert baked, "NEXT_PUBLIC_SITE_URL is inlined at build time"


def test_sharp_is_the_targets_not_the_laptops(built):
    _, _, results, _ = built
    amd = [n for n in members(results["amd64"][1]) if n.endswith(".node")]
    arm = [n for n in members(results["arm64"][1]) if n.endswith(".node")]
    assert amd and all("linux-x64" in n for n in amd), amd
    assert arm and all("linux-arm64" in n for n in arm), arm
    arm_names = members(results["arm64"][1])
    assert "node_modules/@img/sharp-libvips-linux-arm64/package.json" in arm_names
    assert not any("sharp-linux-x64" in n or "libvips-linux-x64" in n for n in arm_names)


def test_nothing_is_rebuilt_while_the_commit_and_variables_stay(built, monkeypatch):
    src, out, results, mp = built
    key, artifact, _ = results["amd64"]
    calls = []
    monkeypatch.setattr(sitebuild, "build", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("rebuilt")))
    sitebuild.site_artifact.cache_clear()
    assert sitebuild.site_artifact("amd64") == results["amd64"]
    assert calls == []
    # a new variable value or a new commit is a new build key
    monkeypatch.setenv("NEXT_PUBLIC_SITE_URL", "https://other.seatwatch.test")
    assert sitebuild.build_key(results["amd64"][2], build_variables(), "amd64") != key
    (src / "app" / "note.txt").write_text("x")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "note"], check=True)
    assert sitebuild.source_commit(src) != results["amd64"][2]
    sitebuild.site_artifact.cache_clear()


def test_a_placeholder_stops_before_anything_is_built(tmp_path, monkeypatch):
    src = site_checkout(tmp_path / "site")
    monkeypatch.setenv("SEATWATCH_SITE_SOURCE", str(src))
    monkeypatch.setenv("SEATWATCH_SITE_BUILD_DIR", str(tmp_path / "out"))
    for k, v in GOOD_VARS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", "https://placeholder.supabase.co")
    sitebuild.site_artifact.cache_clear()
    with pytest.raises(SiteBuildError, match="NEXT_PUBLIC_SUPABASE_URL is a placeholder"):
        sitebuild.site_artifact("amd64")
    assert not (tmp_path / "out").exists()
    sitebuild.site_artifact.cache_clear()


def test_a_native_module_for_another_platform_stops_the_build_naming_it(tmp_path):
    """Only sharp's platform packages are swapped; any other compiled module built here cannot run on an
    arm64 server from an x86_64 laptop (and the reverse): the build stops, naming the file."""
    other = "amd64" if sitebuild._laptop_deb_arch() == "arm64" else "arm64"
    native = tmp_path / "node_modules" / "bcrypt" / "build" / "Release" / "bcrypt_lib.node"
    native.parent.mkdir(parents=True)
    native.write_bytes(b"\x7fELF")
    with pytest.raises(SiteBuildError, match="node_modules/bcrypt/build/Release/bcrypt_lib.node"):
        sitebuild.retarget_native_modules(tmp_path, other, {})
    assert sitebuild.retarget_native_modules(tmp_path, sitebuild._laptop_deb_arch(), {}) == []
