"""The whole deploy planned against a distribution's facts, with no host: pyinfra's fact layer answers.

    plan = plan_deploy("ubuntu-22.04", "aarch64")
    plan.names()                    # every operation's name, in order
    plan.commands("Install PM2")    # the shell commands that operation would run

pyinfra's `_get_fact` (what `host.get_fact` calls) is replaced for the run: LinuxDistribution parses
the distribution's real /etc/os-release (tests/fixtures/os-release/) with pyinfra's own parser, Arch
answers `uname -m`, Os Linux, Which finds every tool, Command answers from a small table (nothing installed: a fresh host), and every
other fact its empty default (no file, no package, no service). The roles run exactly as in
`pyinfra inventory.py deploy.py`, in deploy.py's order; each operation's commands are generated the
way pyinfra generates them before it executes them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from pyinfra.api import Config, Inventory, State
from pyinfra.api import facts as fact_api
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.server import Arch, Command, LinuxDistribution, Os, Which

from tests.test_deploy_config import GOOD_ENV

OS_RELEASE = Path(__file__).parent / "fixtures" / "os-release"
DEPLOY_ENV = GOOD_ENV  # the same complete, valid operator settings as the config tests


class FactLayer:
    """Stands in for pyinfra.api.facts._get_fact: answers from one distribution's facts."""

    def __init__(self, os_release: str, arch: str, commands: dict[str, str] | None = None):
        self.os_release = (OS_RELEASE / os_release).read_text()
        self.arch = arch
        self.commands = {"/proc/meminfo": "1000000", **(commands or {})}  # a 1 GB host: swap on

    def __call__(self, state, host, cls, args=None, kwargs=None, *_rest, **_kw):
        fact = cls()
        if cls is LinuxDistribution:
            return fact.process(["/etc/os-release", *self.os_release.splitlines(), "---"])
        if cls is Arch:
            return fact.process([self.arch])
        if cls is Os:
            return fact.process(["Linux"])
        if cls is Which:  # the base system's tools (useradd, systemctl, ...) are there
            return f"/usr/bin/{(kwargs or {}).get('command') or (args or [''])[0]}"
        if cls is Command:
            command = (kwargs or {}).get("command") or (args or [""])[0]
            return next((out for key, out in self.commands.items() if key in command), "")
        return fact.default()


class Plan:
    def __init__(self, ops: list[tuple[str, list[str], str]]):
        self.ops = ops  # (name, commands, what the commands get on stdin)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.ops]

    def commands(self, name_part: str) -> list[str]:
        """The commands of the operations whose name contains `name_part` (none: an empty list)."""
        return [c for name, cmds, _ in self.ops if name_part in name for c in cmds]

    def stdin(self, name_part: str) -> str:
        """What the operation named so writes through stdin (e.g. the rendered redis.conf)."""
        return "".join(s for name, _, s in self.ops if name_part in name)

    def has(self, name_part: str) -> bool:
        return any(name_part in name for name, _, _ in self.ops)

    def apt_installs(self) -> set[str]:
        """Every package an `apt-get install` of the plan names."""
        packages: set[str] = set()
        for command in self.commands(""):
            if "apt-get" in command and " install " in command:
                words = command.split()
                packages |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
        return packages


@contextmanager
def _environment(env: dict[str, str]):
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SEATWATCH_") or key in ("REDIS_URL", "RESEND_API_URL"):
            del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def plan_deploy(os_release: str, arch: str = "x86_64", commands: dict[str, str] | None = None,
                env: dict[str, str] | None = None) -> Plan:
    """Run deploy.py's roles against these facts; the planned operations with their commands."""
    from roles.app import app
    from roles.base import base
    from roles.caddy import caddy
    from roles.firewall import firewall
    from roles.node import node
    from roles.pm2 import pm2
    from roles.redis import redis
    from roles.site import site

    inventory = Inventory((["seatwatch-host"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("seatwatch-host")
    real_get_fact = fact_api._get_fact
    fact_api._get_fact = FactLayer(os_release, arch, commands)
    try:
        with _environment({**DEPLOY_ENV, **(env or {})}), ctx_state.use(state), ctx_host.use(host):
            base()
            firewall()
            redis()
            release = app()
            node()
            pm2(release)
            site()
            caddy()
            ops = []
            for op_hash in host.op_hash_order:
                name = " / ".join(sorted(state.op_meta[op_hash].names))
                op_data = state.ops[host][op_hash]
                commands = [str(getattr(c, "get_raw_value", lambda c=c: c)()) for c in op_data.command_generator()]
                stdin = op_data.global_arguments.get("_stdin") or ""
                ops.append((name, commands, stdin if isinstance(stdin, str) else "".join(stdin)))
    finally:
        fact_api._get_fact = real_get_fact
    return Plan(ops)
