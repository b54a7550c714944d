"""A real, booted Debian host on this machine, to deploy to (the deploy test and `make sandbox`).

    with TestHost("swtest") as host:      # debootstrap root (cached), netns + veth, systemd-nspawn -b, sshd
        host.ssh("sudo systemctl is-active ssh")
        host.reboot()                      # poweroff, wait, boot again

The root filesystem is built once with debootstrap and cached as a tarball under /var/cache; each
host unpacks a fresh copy. The host lives in its own network namespace behind a veth pair:
this machine is 10.99.N.1, the host 10.99.N.2 (N picked free), NAT gives it the registries.
Everything created (nspawn process, NAT rule, ip_forward value, veth, netns, root copy) is undone
by `down()`, which also runs from `__exit__` and from `python -m tests.testhost down NAME` after a crash.

CLI (root):  python -m tests.testhost up|down|ssh|status [NAME]
             python -m tests.testhost sandbox    # up + stand-ins + deploy, stays up until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SUITE = "bookworm"  # the default: Debian 12; SEATWATCH_TEST_SUITE or TestHost(suite=) picks another
# suite -> (debootstrap script or None for its own, whether it has -updates/-security suites)
SUITES = {
    "bookworm": (None, True),
    "trixie": (None, True),  # Debian 13: boots here (systemd 257)
    # Debian testing: bookworm's debootstrap has no script of that name; no -updates/-security suites.
    # Its systemd (262) will not boot under this machine's cgroup v1: a chroot only (tests/chroot_suite.py).
    "forky": ("/usr/share/debootstrap/scripts/sid", False),
}
NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
QEMU_BINFMT = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
MIRROR = "http://deb.debian.org/debian"
INCLUDE = "systemd,systemd-sysv,dbus,openssh-server,sudo,ca-certificates,locales,iptables"
# Under qemu-user, systemd 257 cannot set up credentials or mount namespaces ("Invalid argument").
EMULATION_NO_NAMESPACES = "".join(f"{d}\n" for d in (
    "LoadCredential=", "ImportCredential=", "PrivateTmp=no", "PrivateDevices=no", "PrivateMounts=no",
    "ProtectSystem=no", "ProtectHome=no", "ProtectKernelTunables=no", "ProtectKernelModules=no",
    "ProtectKernelLogs=no", "ProtectControlGroups=no", "ProtectClock=no", "ProtectHostname=no",
    "ProtectProc=default", "ProcSubset=all", "ReadWritePaths=", "ReadOnlyPaths=", "InaccessiblePaths=",
    "RestrictNamespaces=no", "PrivateIPC=no", "PrivateNetwork=no", "NoExecPaths=", "ExecPaths=",
    "TemporaryFileSystem=", "BindPaths=", "BindReadOnlyPaths="))
# Redis 6.2+ on arm64 tests the kernel for a copy-on-write bug at start; under qemu-user the test
# misfires and Redis 8 exits ("ignore-warnings ARM64-COW-BUG"). A real arm64 kernel passes it.
EMULATION_REDIS = ("[Service]\nExecStart=\nExecStart=/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd "
                   "--daemonize no --ignore-warnings ARM64-COW-BUG\n")
CACHE_VERSION = 2  # bump when the cached root's recipe changes
CACHE_DIR = Path("/var/cache/seatwatch-testhost")
WORK_BASE = Path("/var/tmp/seatwatch-testhost")
LOGIN_USER = "admin"
REPO = Path(__file__).resolve().parent.parent


class TestHostError(RuntimeError):
    """The test host could not be built, booted or reached."""


def log(msg: str) -> None:
    print(f"[testhost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


def quiet(cmd) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


# --------------------------------------------------------------------------- tools and root image

def ensure_tools() -> None:
    if os.geteuid() != 0:
        raise TestHostError("the test host needs root (debootstrap, netns, systemd-nspawn)")
    wanted = {
        "debootstrap": "debootstrap",
        "systemd-nspawn": "systemd-container",
        "iptables": "iptables",
        "ssh": "openssh-client",
        "ssh-keygen": "openssh-client",
        "ip": "iproute2",
    }
    missing = sorted({pkg for exe, pkg in wanted.items() if not shutil.which(exe)})
    if missing:
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)


def chroot(root: Path, script: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    run(["chroot", str(root), "/bin/sh", "-ec", script], env=env)


def ensure_emulation(arch: str, suite: str = SUITE) -> bool:
    """Register qemu-user for a foreign architecture (arm64 on x86_64: about 8x slower).

    The C flag matters: with Debian's default OPF, sudo in the host fails ("effective uid is not 0").
    Suites newer than bookworm (systemd 253+, which spawns units through clone flags bookworm's qemu
    7.2 rejects: "Failed to spawn executor: Invalid argument") get trixie's static qemu (newer_qemu).
    """
    if arch == NATIVE_ARCH:
        return False
    entry = Path(f"/proc/sys/fs/binfmt_misc/{QEMU_BINFMT[arch]}")
    if not shutil.which(f"{QEMU_BINFMT[arch]}-static"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "-qq", "qemu-user-static", "binfmt-support"], env=env,
            stdout=subprocess.DEVNULL)
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    conf = Path(f"/usr/lib/binfmt.d/{QEMU_BINFMT[arch]}.conf").read_text().strip()
    fields = conf.split(":")  # :name:type:offset:magic:mask:interpreter:flags
    fields[6] = str(newer_qemu(arch)) if suite != "bookworm" else fields[6]
    fields[7] = "OCPF"
    if entry.exists():
        text = entry.read_text()
        if "flags: OCPF" in text.replace("POCF", "OCPF") and f"interpreter {fields[6]}\n" in text:
            return False
        entry.write_text("-1")
    Path("/proc/sys/fs/binfmt_misc/register").write_text(":".join(fields))
    log(f"registered {entry.name} (binfmt_misc, flags OCPF, {fields[6]}); removed again by down()")
    return True


def newer_qemu(arch: str) -> Path:
    """trixie's statically linked qemu-user for `arch`, cached: fetched with apt inside a copy of the
    trixie root (debootstrapped like a host's), so this machine's own packages stay as they are."""
    binary = CACHE_DIR / f"{QEMU_BINFMT[arch]}-trixie"
    if binary.exists():
        return binary
    tarball = root_tarball(NATIVE_ARCH, "trixie")
    work = CACHE_DIR / f"qemu-{os.getpid()}"
    try:
        work.mkdir(parents=True)
        run(["tar", "-C", str(work), "--numeric-owner", "-xpf", str(tarball)])
        resolv = work / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text(Path("/etc/resolv.conf").read_text())
        chroot(work, "apt-get update -qq && cd /tmp && apt-get download -qq qemu-user && "
                     "dpkg -x /tmp/qemu-user_*.deb /tmp/q")
        tmp = binary.with_suffix(".tmp")
        shutil.copy2(work / f"tmp/q/usr/bin/{QEMU_BINFMT[arch]}", tmp)
        tmp.rename(binary)
        log(f"cached trixie's {QEMU_BINFMT[arch]} as {binary}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary


def remove_emulation() -> None:
    for name in QEMU_BINFMT.values():
        entry = Path(f"/proc/sys/fs/binfmt_misc/{name}")
        if entry.exists():
            entry.write_text("-1")


def sources_list(suite: str) -> str:
    lines = [f"deb {MIRROR} {suite} main"]
    if SUITES[suite][1]:
        lines += [f"deb {MIRROR} {suite}-updates main",
                  f"deb http://deb.debian.org/debian-security {suite}-security main"]
    return "\n".join(lines) + "\n"


def root_tarball(arch: str = NATIVE_ARCH, suite: str = SUITE) -> Path:
    """The cached, configured root of a suite and arch as a tarball; built with debootstrap on first use (~1 min)."""
    if suite not in SUITES:
        raise TestHostError(f"unknown Debian suite {suite!r}: one of {', '.join(SUITES)}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ARCH = arch
    script = [SUITES[suite][0]] if SUITES[suite][0] else []
    tarball = CACHE_DIR / f"{suite}-{ARCH}-v{CACHE_VERSION}.tar"
    with open(CACHE_DIR / f".lock-{suite}-{ARCH}", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # one builder of this root at a time; other roots build alongside
        if tarball.exists():
            return tarball
        build = CACHE_DIR / f"build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        t0 = time.monotonic()
        log(f"debootstrap {suite}/{ARCH} into {build} (cached afterwards as {tarball})")
        try:
            run(["debootstrap", f"--arch={ARCH}", "--variant=minbase", f"--include={INCLUDE}",
                 suite, str(build), MIRROR, *script], stdout=subprocess.DEVNULL)
            (build / "etc/apt/sources.list").write_text(sources_list(suite))
            (build / "etc/default/locale").write_text("LANG=C.UTF-8\n")
            chroot(build, f"""
                id {LOGIN_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {LOGIN_USER}
                echo '{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{LOGIN_USER}
                chmod 0440 /etc/sudoers.d/{LOGIN_USER}
                if [ "{ARCH}" != "{NATIVE_ARCH}" ]; then  # emulated: these fail "Failed to set up credentials"
                    for u in systemd-sysusers systemd-tmpfiles-setup systemd-tmpfiles-setup-dev; do
                        mkdir -p /etc/systemd/system/$u.service.d
                        printf '[Service]\nLoadCredential=\n' > /etc/systemd/system/$u.service.d/no-cred.conf
                    done
                fi
                systemctl enable ssh >/dev/null 2>&1 || true
                apt-get clean
                rm -rf /var/lib/apt/lists/* /etc/machine-id
                : > /etc/machine-id
            """)
            tmp = tarball.with_suffix(".tmp")
            run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(tmp), "."])
            tmp.rename(tarball)
            for old in CACHE_DIR.glob(f"{suite}-{ARCH}-v*.tar"):  # older recipes
                if old != tarball:
                    old.unlink()
            log(f"root image cached ({tarball.stat().st_size // 2**20} MB) in {time.monotonic() - t0:.0f}s")
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return tarball


# --------------------------------------------------------------------------- the host

def _used_subnets() -> set[int]:
    out = run(["ip", "-o", "-4", "addr"], capture_output=True).stdout
    used = set()
    for word in out.split():
        if word.startswith("10.99."):
            used.add(int(word.split(".")[2]))
    for state in WORK_BASE.glob("*/state.json"):  # hosts still being built have no address yet
        with contextlib.suppress(OSError, ValueError, TypeError):
            used.add(int(json.loads(state.read_text())["subnet"]))
    return used


class UpDown:
    """A context manager over `up()` and `down()`: a failed `up()` still undoes what it made."""

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()


class TestHost(UpDown):
    """One booted Debian host. Context manager; `up()`/`down()` for the CLI."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "swtest", subnet: int | None = None, arch: str | None = None,
                 suite: str | None = None):
        self.arch = arch or os.environ.get("SEATWATCH_TEST_ARCH") or NATIVE_ARCH
        self.suite = suite or os.environ.get("SEATWATCH_TEST_SUITE") or SUITE
        if not name.isalnum() or len(name) > 12:
            raise ValueError("name: letters/digits, at most 12 characters (interface names)")
        self.name = name
        self.workdir = WORK_BASE / name
        self.root = self.workdir / "root"
        self.key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.state_file = self.workdir / "state.json"
        self.netns = f"sw-{name}"
        self.veth_host = f"vh-{name}"
        self.veth_guest = f"vc-{name}"
        self.subnet = subnet
        self.proc: subprocess.Popen | None = None
        self.state: dict = {}

    @property
    def slowdown(self) -> int:
        """How much longer to wait for things on this host (qemu emulation is about 8x slower)."""
        return 1 if self.arch == NATIVE_ARCH else 6

    # addresses
    @property
    def gateway(self) -> str:
        """This machine's address as the host sees it (stand-ins listen here)."""
        return f"10.99.{self.subnet}.1"

    @property
    def address(self) -> str:
        return f"10.99.{self.subnet}.2"

    @property
    def gateway6(self) -> str:
        return f"fd99:{self.subnet}::1"

    @property
    def address6(self) -> str:
        """The host's IPv6 address (a ULA on the same veth): the firewall's IPv6 half is tested through it."""
        return f"fd99:{self.subnet}::2"

    # ------------------------------------------------------------------ lifecycle
    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def up(self) -> None:
        ensure_tools()
        reap_stale()
        if self.workdir.exists():
            old = TestHost.load(self.name)
            if old.running():
                raise TestHostError(f"test host {self.name} is already running "
                                    f"(python -m tests.testhost down {self.name})")
            log(f"cleaning up a previous {self.name}")
            old.down()
        t0 = time.monotonic()
        WORK_BASE.mkdir(parents=True, exist_ok=True)
        with open(WORK_BASE / ".subnet-lock", "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)  # two runs starting at once must not pick one subnet
            if self.subnet is None:
                used = _used_subnets()
                self.subnet = next(n for n in range(10, 250) if n not in used)
            self.workdir.mkdir(parents=True)
            self.state = {"name": self.name, "subnet": self.subnet, "created": [], "started": time.time(),
                          "arch": self.arch, "suite": self.suite}
            self._save()  # the subnet is taken from here on (state.json)
        if ensure_emulation(self.arch, self.suite):
            self.state["created"].append("binfmt")
        self._save()
        tarball = root_tarball(self.arch, self.suite)
        self._prepare_root(tarball)
        self._network()
        self.boot()
        log(f"{self.name} up at {self.address} in {time.monotonic() - t0:.1f}s")

    def _prepare_root(self, tarball: Path) -> None:
        self.root.mkdir()
        run(["tar", "-C", str(self.root), "--numeric-owner", "-xpf", str(tarball)])
        (self.root / "etc/hostname").write_text(self.name + "\n")
        hosts = (self.root / "etc/hosts").read_text() if (self.root / "etc/hosts").exists() else ""
        (self.root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n" + hosts)
        resolv = self.root / "etc/resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        resolv.write_text(Path("/etc/resolv.conf").read_text())
        # The sandbox's TLS interception: the host needs this machine's extra CAs for pip and npm.
        extra = Path("/usr/local/share/ca-certificates")
        if extra.is_dir():
            shutil.copytree(extra, self.root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        if self.arch != NATIVE_ARCH:
            # qemu-user translates code (needs W+X memory), issues this machine's own syscalls and
            # has no user namespaces: hardened units (redis-server's MemoryDenyWriteExecute,
            # SystemCallArchitectures=native, SystemCallFilter, PrivateUsers) die under emulation.
            # An emulation artefact, not the deploy's: relax them for every service of the emulated
            # host (a top-level service.d drop-in). A native arm64 VPS runs them as shipped.
            dropin = self.root / "etc/systemd/system/service.d"
            dropin.mkdir(parents=True, exist_ok=True)
            # systemd 257 (trixie) also fails credentials and mount namespaces there (journald, logind,
            # redis-server, caddy): none for the emulated host.
            (dropin / "qemu-emulation.conf").write_text(
                "[Service]\nMemoryDenyWriteExecute=no\nSystemCallArchitectures=\nSystemCallFilter=\nPrivateUsers=no\n"
                + ("" if self.suite == "bookworm" else EMULATION_NO_NAMESPACES))
            if self.suite != "bookworm":
                redis_dropin = self.root / "etc/systemd/system/redis-server.service.d"
                redis_dropin.mkdir(parents=True, exist_ok=True)
                (redis_dropin / "qemu-cow-check.conf").write_text(EMULATION_REDIS)  # another name than service.d's
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testhost-{self.name}", "-f", str(self.key)])
        ssh_dir = self.root / f"home/{LOGIN_USER}/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        chroot(self.root, f"""
            update-ca-certificates >/dev/null 2>&1
            chown -R {LOGIN_USER}:{LOGIN_USER} /home/{LOGIN_USER}/.ssh
            chmod 0600 /home/{LOGIN_USER}/.ssh/authorized_keys
        """)
        # Pin the host key so ssh and pyinfra can check it strictly.
        pub = (self.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"{self.address} {pub[0]} {pub[1]}\n")

    def _network(self) -> None:
        s = self.state
        gw, ip, ns = self.gateway, self.address, self.netns
        run(["ip", "netns", "add", ns]); s["created"].append("netns"); self._save()
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_guest])
        s["created"].append("veth"); self._save()
        run(["ip", "link", "set", self.veth_guest, "netns", ns])
        run(["ip", "addr", "add", f"{gw}/24", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        run(["ip", "-6", "addr", "add", f"{self.gateway6}/64", "dev", self.veth_host, "nodad"])
        for cmd in (f"ip addr add {ip}/24 dev {self.veth_guest}",
                    f"ip -6 addr add {self.address6}/64 dev {self.veth_guest} nodad", f"ip link set {self.veth_guest} up",
                    "ip link set lo up", f"ip route add default via {gw}"):
            run(["ip", "netns", "exec", ns, *cmd.split()])
        s["ip_forward_before"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        s["created"].append("ip_forward"); self._save()
        s["nat_rule"] = ["POSTROUTING", "-s", f"10.99.{self.subnet}.0/24", "!", "-o", self.veth_host,
                         "-j", "MASQUERADE"]
        run(["iptables", "-t", "nat", "-A", *s["nat_rule"]])
        s["created"].append("nat"); self._save()

    def nspawn_cmd(self) -> list[str]:
        return ["systemd-nspawn", "-q", "-b", "-D", str(self.root), "-M", self.name, "--register=no",
                "--keep-unit", f"--network-namespace-path=/run/netns/{self.netns}", "--resolv-conf=off",
                "--timezone=off",
                # its own network namespace: let it manage its firewall (the firewall role)
                "--capability=CAP_NET_ADMIN"]

    def boot(self, timeout: float | None = None) -> None:
        timeout = timeout or 90 * self.slowdown
        console = open(self.workdir / "console.log", "a")
        self.proc = subprocess.Popen(self.nspawn_cmd(), stdin=subprocess.DEVNULL, stdout=console,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        console.close()
        self.state["pid"] = self.proc.pid
        self._save()
        self.wait_ssh(timeout)

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TestHostError(f"systemd-nspawn exited with {self.proc.returncode}; see "
                                    f"{self.workdir / 'console.log'}:\n{self.console_tail()}")
            if self.ssh("true", check=False, timeout=10, quiet=True).returncode == 0:
                return
            time.sleep(0.5)
        raise TestHostError(f"no ssh on {self.address} after {timeout:.0f}s:\n{self.console_tail()}")

    def console_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.workdir / "console.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def ssh_base(self) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"{LOGIN_USER}@{self.address}"]

    def ssh(self, command: str, check: bool = True, timeout: float | None = None, quiet: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        timeout = timeout or 120 * self.slowdown
        try:
            cp = subprocess.run([*self.ssh_base(), command], capture_output=True, text=True,
                                timeout=timeout, input=input)
        except subprocess.TimeoutExpired as exc:
            if check:
                raise TestHostError(f"ssh {command!r} timed out after {timeout}s") from exc
            return subprocess.CompletedProcess(exc.cmd, 124, "", "timeout")
        if check and cp.returncode != 0:
            raise TestHostError(f"ssh {command!r} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp

    def reboot(self, timeout: float | None = None) -> float:
        """Power the host off from inside, wait for nspawn to exit, boot it again. Returns seconds."""
        timeout = timeout or 90 * self.slowdown
        t0 = time.monotonic()
        self.ssh("sudo systemctl poweroff", check=False, timeout=30)
        self._wait_exit(timeout)
        self.boot(timeout)
        return time.monotonic() - t0

    def _wait_exit(self, timeout: float) -> None:
        pid = self.state.get("pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            elif not pid or not _alive(pid):
                return
            time.sleep(0.2)
        raise TestHostError(f"the host did not power off within {timeout:.0f}s")

    def pyinfra_env(self) -> dict[str, str]:
        """Environment for the project's inventory.py to reach this host."""
        return {
            "SEATWATCH_HOST": self.address,
            "SEATWATCH_SSH_USER": LOGIN_USER,
            "SEATWATCH_SSH_KEY": str(self.key),
            "SEATWATCH_SSH_PORT": "22",
            "SEATWATCH_SSH_KNOWN_HOSTS": str(self.known_hosts),
        }

    # ------------------------------------------------------------------ teardown
    @classmethod
    def load(cls, name: str) -> "TestHost":
        host = cls(name)
        try:
            host.state = json.loads(host.state_file.read_text())
            host.subnet = host.state.get("subnet")
            host.arch = host.state.get("arch", host.arch)
            host.suite = host.state.get("suite", host.suite)
        except (OSError, ValueError):
            host.state = {"created": ["netns", "veth", "nat?"]}
        return host

    def running(self) -> bool:
        pid = self.state.get("pid")
        return bool(pid and _alive(pid) and _is_nspawn(pid))

    def down(self) -> None:
        """Undo everything, best effort, in reverse order. Safe to call twice."""
        self._stop()
        s, created = self.state, self.state.get("created", [])
        if "nat" in created and s.get("nat_rule"):
            while quiet(["iptables", "-t", "nat", "-D", *s["nat_rule"]]):
                pass
        if "ip_forward" in created and s.get("ip_forward_before") is not None:
            others = [l for l in os.listdir("/sys/class/net") if l.startswith("vh-") and l != self.veth_host]
            if not others:  # another test host still needs forwarding
                Path("/proc/sys/net/ipv4/ip_forward").write_text(s["ip_forward_before"] + "\n")
        if Path(f"/sys/class/net/{self.veth_host}").exists():
            quiet(["ip", "link", "del", self.veth_host])
        if Path(f"/run/netns/{self.netns}").exists():
            quiet(["ip", "netns", "del", self.netns])
        if "binfmt" in created:
            remove_emulation()
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.state = {}

    def _stop(self) -> None:
        pid = self.proc.pid if self.proc is not None else self.state.get("pid")
        if not pid or not _alive(pid) or not _is_nspawn(pid):
            return
        # SIGTERM makes nspawn ask the container's init to power off.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            if self.proc is not None:
                self.proc.poll()
            time.sleep(0.2)
        if _alive(pid):
            for child in _children(pid):  # the container's init: killing it ends its PID namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(10)


def reap_stale() -> None:
    """Remove test hosts left behind by runs that died (their nspawn process is gone)."""
    if not WORK_BASE.is_dir():
        return
    for workdir in WORK_BASE.iterdir():
        if not workdir.is_dir() or not workdir.name.startswith("swt"):
            continue  # auto-named test hosts only; the sandbox is removed with `down`
        host = TestHost.load(workdir.name)
        started = host.state.get("started", 0)
        if not host.running() and time.time() - started > 600:
            log(f"removing stale test host {workdir.name}")
            host.down()


def unique_name(prefix: str = "swt") -> str:
    return f"{prefix}{os.getpid() % 1000000}"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_nspawn(pid: int) -> bool:
    try:
        return b"systemd-nspawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


# --------------------------------------------------------------------------- TCP forwarder

class TcpForwarder:
    """Forward listen_host:listen_port to target (e.g. PostgreSQL on 127.0.0.1:5432) in threads."""

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.server = socket.create_server((listen_host, listen_port), reuse_port=False)
        self.server.settimeout(0.5)
        self.address = self.server.getsockname()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "TcpForwarder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()
        for c in list(self._conns):
            with contextlib.suppress(OSError):
                c.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.testhost", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "ssh", "status", "sandbox", "unemulate"])
    p.add_argument("--site", action="store_true", help="sandbox: Debian 13 with the site fixture beside the backend")
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.command == "sandbox":
        from tests import sandbox
        # `sandbox --site`: argparse's REMAINDER takes a flag after the positionals as `rest`
        return sandbox.main(a.name or "swsandbox", site=a.site or "--site" in a.rest)
    name = a.name or "swsandbox"
    if a.command == "unemulate":
        remove_emulation()
        return 0
    if a.command == "up":
        host = TestHost(name)
        try:
            host.up()
        except BaseException:
            host.down()
            raise
        print(json.dumps({"address": host.address, "gateway": host.gateway, **host.pyinfra_env()}, indent=2))
        return 0
    host = TestHost.load(name)
    if a.command == "down":
        host.down()
        log(f"{name} removed")
        return 0
    if not host.state.get("subnet"):
        print(f"no test host {name!r} (python -m tests.testhost up {name})", file=sys.stderr)
        return 1
    if a.command == "status":
        pid = host.state.get("pid")
        print(json.dumps({**host.state, "running": bool(pid and _alive(pid))}, indent=2))
        return 0
    os.execvp("ssh", [*host.ssh_base(), *a.rest])
    return 0


if __name__ == "__main__":
    sys.exit(main())
