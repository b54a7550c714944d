"""Check that requirements.lock installs with its hashes on every Python and architecture a host has.

    python scripts/check_lock.py [requirements.lock]      # run by `make lock` after pip-compile

Targets: CPython 3.11 to 3.14 (Debian 12/13, Ubuntu 22.04 to 26.04; README "Supported systems") on
x86_64 and aarch64 with glibc 2.35 or newer (Ubuntu 22.04's is the oldest). For each pinned version
the package index's file list is read (its JSON API, one request per package) and, for each target,
a file is looked for that pip would pick there *and* whose sha256 is in the lock. A package whose
version ships platform wheels (a binary one, e.g. psycopg-binary) needs a wheel for every target; a
pure-Python one needs a universal wheel or its sdist. Exits 1 naming each package and target missing.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import urllib.request
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import parse_wheel_filename

PYTHONS = [(3, 11), (3, 12), (3, 13), (3, 14)]
ARCHES = ["x86_64", "aarch64"]
GLIBC = (2, 35)  # the oldest supported system's (Ubuntu 22.04)
INDEX = os.environ.get("SEATWATCH_LOCK_INDEX", "https://pypi.org/simple")  # PEP 691 JSON


def platforms(arch: str) -> list[str]:
    names = [f"manylinux_{GLIBC[0]}_{minor}_{arch}" for minor in range(GLIBC[1], 4, -1)]
    names += [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch == "x86_64" else [])
    return names + [f"linux_{arch}"]


def target_tags(python: tuple[int, int], arch: str) -> set[Tag]:
    plats = platforms(arch)
    return set(cpython_tags(python, platforms=plats)) | set(compatible_tags(python, "cp" + "".join(map(str, python)),
                                                                          platforms=plats))


def read_lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, the lock's sha256 hashes)."""
    pins: dict[str, tuple[str, set[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            name = m.group(1).lower().replace("_", "-")
            pins[name] = (m.group(2), set())
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            if name:
                pins[name][1].add(digest)
    return pins


def index_files(name: str, version: str) -> list[dict]:
    """The index's files of this release: [{"filename", "sha256"}] (the simple API, PEP 691 JSON)."""
    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=30, context=context) as resp:
        files = json.load(resp)["files"]
    return [{"filename": f["filename"], "sha256": f["hashes"].get("sha256", "")} for f in files]


def problems(pins: dict[str, tuple[str, set[str]]], files_of=index_files) -> list[str]:
    found = []
    for name, (version, hashes) in sorted(pins.items()):
        files = [f for f in files_of(name, version) if f["sha256"] in hashes]
        wheels = [(f["filename"], parse_wheel_filename(f["filename"])[3]) for f in files
                  if f["filename"].endswith(".whl")]
        binary = any(t.platform != "any" for _, tags in wheels for t in tags)
        has_sdist = any(f["filename"].endswith((".tar.gz", ".zip")) for f in files)
        for python in PYTHONS:
            for arch in ARCHES:
                wanted = target_tags(python, arch)
                if any(tags & wanted for _, tags in wheels):
                    continue
                if not binary and has_sdist:
                    continue  # pure Python, built from its (hashed) sdist
                found.append(f"{name}=={version}: no hashed file for cp{python[0]}{python[1]} on {arch}")
    return found


def main(argv: list[str]) -> int:
    lock = Path(argv[0] if argv else "requirements.lock")
    pins = read_lock(lock)
    missing = [name for name, (_, hashes) in pins.items() if not hashes]
    if missing:
        print(f"{lock}: no hashes for {', '.join(missing)}", file=sys.stderr)
        return 1
    found = problems(pins)
    for line in found:
        print(f"{lock}: {line}", file=sys.stderr)
    if not found:
        targets = ", ".join(f"{p[0]}.{p[1]}" for p in PYTHONS)
        print(f"{lock}: {len(pins)} pins, each with a hashed file for CPython {targets} on {' and '.join(ARCHES)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
