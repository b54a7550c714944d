"""The fast test suite under another Debian's Python, in a throwaway root of that suite (`make test-forky`).

    python -m tests.chroot_suite forky [PYTEST ARGS...]     # root needed

A fresh copy of the cached debootstrap root of the suite (tests/testhost.root_tarball) gets the
distribution's python3, python3-venv and redis-server; a venv there installs requirements.lock
with its hashes (what a release venv does on a server), then the project and pytest; the fast
suite (`-m 'not deploy'`) runs against this machine's Redis and PostgreSQL: the root is entered with
systemd-nspawn without booting and without a network of its own, so 127.0.0.1 is this machine's.
(Debian testing's systemd does not boot under this machine's cgroup v1; nothing here boots it.)
The project is copied in, never bind-mounted: removing the root cannot touch the work tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.testhost import NATIVE_ARCH, REPO, WORK_BASE, ensure_tools, log, root_tarball, run

PASS_ENV = ("TEST_REDIS_URL", "TEST_PG_ADMIN_URL", "TEST_PGBOUNCER_URL", "PIP_DEFAULT_TIMEOUT")


def project_files() -> list[str]:
    """The work tree's files as git sees them (tracked and new, not ignored)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def _mounted_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if (line.split()[4] + "/").startswith(prefix)]


def main(argv: list[str]) -> int:
    suite, pytest_args = (argv[0] if argv else "forky"), argv[1:]
    ensure_tools()
    t0 = time.monotonic()
    tarball = root_tarball(NATIVE_ARCH, suite)
    root = WORK_BASE / f"chroot-{suite}-{os.getpid()}"
    root.mkdir(parents=True)
    try:
        run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tarball)])
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text(Path("/etc/resolv.conf").read_text())
        extra = Path("/usr/local/share/ca-certificates")  # the sandbox's TLS interception
        if extra.is_dir():
            shutil.copytree(extra, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        src = root / "src"
        for rel in project_files():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
        db = os.environ.get("SEATWATCH_TEST_DB", "seatwatch_test") + f"_{suite}"
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        env.update({"SEATWATCH_TEST_DB": db, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
                    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
                    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        pytest = " ".join(pytest_args) or "-m 'not deploy' -q -p no:cacheprovider"
        script = f"""
            update-ca-certificates >/dev/null 2>&1
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d  # start no service
            # testing's Release files carry a Valid-Until that a mirror snapshot can outlive
            apt-get -o Acquire::Check-Valid-Until=false update -qq
            apt-get install -y -qq --no-install-recommends python3 python3-venv redis-server git >/dev/null
            echo "[chroot {suite}] $(python3 --version), $(redis-server --version | cut -d' ' -f1-3)"
            python3 -m venv /opt/venv
            /opt/venv/bin/pip install -q --require-hashes -r /src/requirements.lock
            echo "[chroot {suite}] requirements.lock installed with its hashes"
            /opt/venv/bin/pip install -q --no-deps -e /src && /opt/venv/bin/pip install -q -e '/src[test]'
            cd /src && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm snapshot
            exec /opt/venv/bin/python -m pytest {pytest}
        """
        cmd = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--resolv-conf=off",
               "--timezone=off", *[f"--setenv={k}={v}" for k, v in env.items()], "/bin/sh", "-ec", script]
        log(f"{suite} chroot at {root}: installing, then the fast suite")
        rc = subprocess.run(cmd).returncode
        log(f"{suite}: pytest exited {rc} after {time.monotonic() - t0:.0f}s in all")
        return rc
    finally:
        mounts = _mounted_under(root)
        if mounts:  # never delete through a mount
            log(f"left {root} in place: still mounted there: {mounts}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
