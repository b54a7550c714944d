"""sitebuild: the Next.js site built on the laptop (never on the 1 GB VPS) into one artifact per build.

    SEATWATCH_SITE_SOURCE=~/src/pickmyclass   the site's git checkout (unset: no site, nothing here runs)

What `make deploy` does with it, before any change on a server (roles/site.py calls `site_artifact`):

1. The public build variables (BUILD_VARS) are checked: a missing one or a placeholder stops the deploy,
   naming the variable, never its value (the site's Supabase client silently falls back to a placeholder
   URL without them, and sign-in breaks only in the browser).
2. The build key: a hash of the checkout's commit (HEAD; uncommitted changes are not built, a warning says
   so), the build variables, the target's architecture and BUILD_FORMAT. An artifact with that key in the
   build directory (SEATWATCH_SITE_BUILD_DIR) is reused: nothing is built when neither changed.
3. `git archive HEAD` into a scratch directory; the dependencies from the site's own lock file (`bun.lock`:
   bun's `install --frozen-lockfile`, bun from the npm registry at BUN_VERSION; `package-lock.json`: `npm ci`),
   without the packages' install scripts unless SEATWATCH_SITE_INSTALL_SCRIPTS=on;
   `next build` under Node (never Bun: the server runs on Node) with the build variables.
4. The artifact: Next's standalone server (`output: 'standalone'`) with `.next/static` and `public` beside
   it. Its native modules are made to match the target: sharp's platform packages (`@img/sharp-*`, built for
   the laptop) are replaced by the target's, fetched with `npm pack` (the registry's integrity check);
   any other native module for another platform stops the build, naming it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from roles.config import PROJECT, DeployError

BUILD_VARS = ("NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_ANON_KEY", "NEXT_PUBLIC_SITE_URL")
URL_VARS = ("NEXT_PUBLIC_SUPABASE_URL", "NEXT_PUBLIC_SITE_URL")
# what a template or the site's own fallback leaves in a value: never a real project's
PLACEHOLDER = re.compile(r"placeholder|your[-_ ]|<[^>]*>|changeme|change-me|x{4,}|\.\.\.|^todo$|^example$",
                         re.IGNORECASE)
BUN_VERSION = "1.4.5"  # bun's npm package: only to install from a bun.lock; the build and the server run Node
NODE_MIN = (20, 9)  # Next.js 16
BUILD_FORMAT = "1"  # bump when the artifact's layout changes: every cached build is then made again
NPM_ARCH = {"amd64": "x64", "arm64": "arm64"}  # Debian's architecture -> Node's process.arch
MANIFEST = "SEATWATCH_SITE_BUILD"


class SiteBuildError(DeployError):
    """The site cannot be built (a setting, the checkout, the toolchain): one line, before any server change."""


def build_variables(environ=None) -> dict[str, str]:
    """The public build variables, each present and not a placeholder; the error names every bad one."""
    environ = os.environ if environ is None else environ
    values, bad = {}, []
    for name in BUILD_VARS:
        value = environ.get(name, "").strip()
        if not value:
            bad.append(f"{name} is not set")
        elif PLACEHOLDER.search(value) or "placeholder" in value.lower():
            bad.append(f"{name} is a placeholder")
        elif name in URL_VARS and not re.match(r"^https?://[^/\s]+", value):
            bad.append(f"{name} is not an http(s) URL")
        values[name] = value
    if bad:
        raise SiteBuildError("the site is not built: " + "; ".join(bad)
                             + " (baked into the browser bundle at build time: set it in deploy.env)")
    return values


def _git(src: Path, *args: str) -> str:
    cp = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True)
    if cp.returncode != 0:
        raise SiteBuildError(f"SEATWATCH_SITE_SOURCE is not a git checkout with a commit ({src}): "
                             f"{cp.stderr.strip().splitlines()[-1] if cp.stderr.strip() else 'git failed'}")
    return cp.stdout.strip()


def source_commit(src: Path) -> str:
    """HEAD of the checkout; a warning when the work tree differs from it (those changes are not built)."""
    if not src.is_dir():
        raise SiteBuildError(f"SEATWATCH_SITE_SOURCE is not a directory: {src}")
    commit = _git(src, "rev-parse", "--verify", "HEAD")
    if _git(src, "status", "--porcelain", "--untracked-files=no"):
        print(f"warning: {src} has uncommitted changes; the site is built from its commit {commit[:12]}",
              file=sys.stderr)
    return commit


def build_key(commit: str, variables: dict[str, str], deb_arch: str) -> str:
    text = json.dumps({"commit": commit, "vars": variables, "arch": deb_arch, "format": BUILD_FORMAT},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installer(work: Path, scripts: bool = False) -> list[str]:
    """The install command for the lock file the site carries; bun's wins (the real site's package-lock is stale).
    The packages' install scripts do not run unless asked (SEATWATCH_SITE_INSTALL_SCRIPTS=on): `next build`
    needs none (sharp and Next's compiler come as prebuilt platform packages), and they run anything on this
    laptop; the real site's `supabase` CLI dependency, for one, downloads its binary from GitHub in one."""
    no_scripts = [] if scripts else ["--ignore-scripts"]
    if (work / "bun.lock").is_file() or (work / "bun.lockb").is_file():
        return ["npm", "exec", "--yes", f"--package=bun@{BUN_VERSION}", "--", "bun", "install", "--frozen-lockfile",
                *no_scripts]
    if (work / "package-lock.json").is_file():
        return ["npm", "ci", "--no-audit", "--no-fund", *no_scripts]
    raise SiteBuildError("the site has no lock file (bun.lock or package-lock.json): it is not built "
                         "from unpinned dependencies")


def check_node(node: str = "node") -> str:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SiteBuildError("the site is built with Node.js on this machine: `node` was not found") from None
    major, minor = (int(p) for p in out.lstrip("v").split(".")[:2])
    if (major, minor) < NODE_MIN:
        raise SiteBuildError(f"Node.js {out} here: the site (Next.js 16) needs {NODE_MIN[0]}.{NODE_MIN[1]} or newer")
    return out


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    cp = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if cp.returncode != 0:
        tail = "\n".join(cp.stdout.strip().splitlines()[-25:])
        raise SiteBuildError(f"{what} failed (exit {cp.returncode}):\n{tail}")


def _build_env(variables: dict[str, str]) -> dict[str, str]:
    # The laptop's own NEXT_PUBLIC_* and secrets stay out: only what the build is keyed by reaches it.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "npm_config_cache", "NPM_CONFIG_CACHE",
            "npm_config_registry", "NPM_CONFIG_REGISTRY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(variables)
    env.update({"NEXT_TELEMETRY_DISABLED": "1", "NODE_ENV": "production", "CI": "1"})
    return env


def native_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.node") if p.is_file())


def retarget_native_modules(standalone: Path, deb_arch: str, env: dict[str, str]) -> list[str]:
    """Make the standalone server's native modules the target's (linux, glibc, its CPU). Returns what was done."""
    cpu = NPM_ARCH[deb_arch]
    modules = standalone / "node_modules"
    img = modules / "@img"
    done = []
    sharp_pkg = modules / "sharp" / "package.json"
    if sharp_pkg.is_file():
        optional = json.loads(sharp_pkg.read_text()).get("optionalDependencies", {})
        wanted = {n: v for n, v in optional.items()
                  if n in (f"@img/sharp-linux-{cpu}", f"@img/sharp-libvips-linux-{cpu}")}
        for old in sorted(img.glob("sharp-*")) if img.is_dir() else []:
            shutil.rmtree(old)
        with tempfile.TemporaryDirectory(prefix="seatwatch-sharp-") as tmp:
            for name, version in sorted(wanted.items()):
                _run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", tmp], Path(tmp), env,
                     f"fetching {name}@{version} for linux-{cpu}")
            for tgz in sorted(Path(tmp).glob("*.tgz")):
                dest = img / tgz.name.split("-", 1)[1].rsplit("-", 1)[0]  # img-sharp-linux-x64-0.35.6.tgz
                dest.mkdir(parents=True)
                with tarfile.open(tgz) as tar:
                    for member in tar.getmembers():
                        if not member.name.startswith("package/") or not (member.isfile() or member.isdir()):
                            continue
                        member.name = member.name[len("package/"):]
                        tar.extract(member, dest, filter="data")
        done.append("sharp for linux-" + cpu + (f" ({', '.join(sorted(wanted))})" if wanted else " (none published)"))
    built_here_fits = sys.platform.startswith("linux") and _laptop_deb_arch() == deb_arch
    foreign = [str(p.relative_to(standalone)) for p in native_files(standalone)
               if f"linux-{cpu}" not in str(p) and not built_here_fits]
    if foreign:
        raise SiteBuildError("the site's server carries native modules built for this machine, not for the "
                             f"{deb_arch} server: {', '.join(foreign[:5])} (install the target's build or drop them)")
    return done


def _laptop_deb_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def build(src: Path, deb_arch: str, out_dir: Path, variables: dict[str, str], commit: str, key: str) -> Path:
    """Build the checkout's commit into out_dir/site-<key>.tar.gz (made atomically: a partial build is never reused)."""
    check_node()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"work-{key}-", dir=out_dir))
    try:
        archive = subprocess.run(["git", "-C", str(src), "archive", "--format=tar", commit], capture_output=True)
        if archive.returncode != 0:
            raise SiteBuildError(f"git archive of {commit[:12]} failed: {archive.stderr.decode().strip()[-300:]}")
        src_dir = work / "src"
        src_dir.mkdir()
        subprocess.run(["tar", "-x", "-C", str(src_dir)], input=archive.stdout, check=True)
        env = _build_env(variables)
        install_env = {**env, "NODE_ENV": "development"}  # next build needs the dev dependencies (TypeScript...)
        scripts = os.environ.get("SEATWATCH_SITE_INSTALL_SCRIPTS", "").strip().lower() in ("1", "on", "true", "yes")
        _run(installer(src_dir, scripts), src_dir, install_env, "installing the site's locked dependencies")
        next_bin = src_dir / "node_modules" / "next" / "dist" / "bin" / "next"
        if not next_bin.is_file():
            raise SiteBuildError("the site's dependencies have no `next`: is SEATWATCH_SITE_SOURCE a Next.js app?")
        _run(["node", str(next_bin), "build"], src_dir, env, "next build")
        standalone = src_dir / ".next" / "standalone"
        if not (standalone / "server.js").is_file():
            raise SiteBuildError("next build made no standalone server (.next/standalone/server.js): "
                                 "the site's next.config needs output: 'standalone'")
        shutil.copytree(src_dir / ".next" / "static", standalone / ".next" / "static")
        if (src_dir / "public").is_dir():
            shutil.copytree(src_dir / "public", standalone / "public")
        notes = retarget_native_modules(standalone, deb_arch, env)
        (standalone / MANIFEST).write_text(json.dumps(
            {"key": key, "commit": commit, "arch": deb_arch, "variables": sorted(variables), "native": notes},
            indent=1) + "\n")
        tmp = out_dir / f".site-{key}.tar.gz.part"
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            tar.add(standalone, arcname=".", filter=_normalize)
        final = out_dir / f"site-{key}.tar.gz"
        os.replace(tmp, final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("SEATWATCH_SITE_BUILD_DIR", "").strip() or PROJECT / ".site-build"))


def site_source() -> Path | None:
    raw = os.environ.get("SEATWATCH_SITE_SOURCE", "").strip()
    return Path(os.path.expanduser(raw)).resolve() if raw else None


@functools.lru_cache(maxsize=None)
def site_artifact(deb_arch: str) -> tuple[str, Path, str]:
    """(build key, artifact path, commit) for the configured checkout and target: built once per deploy run
    and reused across runs while neither the commit nor the build variables change."""
    src = site_source()
    if src is None:
        raise SiteBuildError("SEATWATCH_SITE_SOURCE is not set")
    variables = build_variables()
    commit = source_commit(src)
    key = build_key(commit, variables, deb_arch)
    artifact = build_dir() / f"site-{key}.tar.gz"
    if not artifact.is_file():
        print(f"building the site {commit[:12]} for {deb_arch} (key {key}) ...", file=sys.stderr, flush=True)
        artifact = build(src, deb_arch, build_dir(), variables, commit, key)
    return key, artifact, commit
