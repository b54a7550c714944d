"""requirements.lock's check (scripts/check_lock.py, run by `make lock`): a wheel for every Python and arch."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import check_lock  # noqa: E402

H = {c: c * 64 for c in "abcdef"}  # fake sha256 digests


def test_every_pin_of_the_lock_has_hashes():
    pins = check_lock.read_lock(REPO / "requirements.lock")
    assert {"psycopg-binary", "redis", "huey", "async-timeout"} <= set(pins)
    assert all(hashes for _, hashes in pins.values())


def test_a_binary_pin_without_a_wheel_for_a_target_is_named():
    files = {
        "binpkg": [  # x86_64 for every Python, aarch64 only up to 3.13
            {"filename": "binpkg-1.0-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "sha256": H["a"]},
            {"filename": "binpkg-1.0-cp311-abi3-manylinux_2_28_aarch64.whl", "sha256": H["b"]},
            {"filename": "binpkg-1.0-cp314-cp314-manylinux_2_28_aarch64.whl", "sha256": H["c"]},
        ],
        "pure": [{"filename": "pure-2.0.tar.gz", "sha256": H["d"]}],  # sdist only: built anywhere
    }
    pins = {"binpkg": ("1.0", {H["a"], H["b"]}), "pure": ("2.0", {H["d"]})}
    # abi3 from 3.11 covers 3.11-3.14 on both arches
    assert check_lock.problems(pins, files_of=lambda name, version: files[name]) == []
    # only the cp314 aarch64 wheel's hash: every other target is named
    pins["binpkg"] = ("1.0", {H["c"]})
    found = check_lock.problems(pins, files_of=lambda name, version: files[name])
    assert "binpkg==1.0: no hashed file for cp314 on aarch64" not in found
    assert "binpkg==1.0: no hashed file for cp313 on aarch64" in found
    assert "binpkg==1.0: no hashed file for cp311 on x86_64" in found and len(found) == 7
    # a wheel that needs a newer glibc than Ubuntu 22.04's (2.35) does not count
    files["binpkg"] = [{"filename": "binpkg-1.0-cp311-abi3-manylinux_2_39_x86_64.whl", "sha256": H["e"]}]
    pins["binpkg"] = ("1.0", {H["e"]})
    assert len(check_lock.problems(pins, files_of=lambda name, version: files[name])) == 8


def test_the_laptops_toolchain_is_pinned_hashed_and_held_to_the_servers_pins():
    """requirements-deploy.lock (`make install` installs it with --require-hashes): pyinfra and
    python-dotenv pinned and hashed, and every package both locks name at the same version."""
    laptop = check_lock.read_lock(REPO / "requirements-deploy.lock")
    server = check_lock.read_lock(REPO / "requirements.lock")
    assert {"pyinfra", "python-dotenv", "paramiko"} <= set(laptop)
    assert all(hashes for _, hashes in laptop.values())
    assert {name: laptop[name][0] for name in set(laptop) & set(server)} == {
        name: server[name][0] for name in set(laptop) & set(server)}
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements-deploy.lock" in makefile
