"""bench/on_host.py's stack_smaps: processes found by role, their smaps_rollup read in one call.

The "host" is this machine through a shell (no ssh, no sudo: the processes are our own), its
process list narrowed to the children started here so other processes on the machine don't count.
"""

from __future__ import annotations

import subprocess

import pytest

from bench import _memfig, on_host

# `args` as ps shows them: the role needles of on_host.ROLES appear in the command line
IDLE = "import sys; b = bytearray(8_000_000); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); sys.stdin.read()"


class LocalHost:
    def __init__(self, pids):
        self.pids = pids

    def ssh(self, command, quiet=False, check=True):
        if command.startswith("ps -wweo pid=,args="):
            command = f"ps -ww -o pid=,args= -p {','.join(map(str, self.pids))}"
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=check)


@pytest.fixture
def started(holding_child):
    return lambda *tail: holding_child(IDLE, *tail)


def test_each_role_gets_its_processes_figures_and_the_stack_their_pss_sum(started):
    web, worker, site = started("app", "web"), started("app", "worker"), started("server.js")
    figs = on_host.stack_smaps(LocalHost([web.pid, worker.pid, site.pid]), sudo="")
    own = {n: _memfig.of_pid(p.pid) for n, p in (("web", web), ("worker", worker), ("site", site))}
    for name, fig in own.items():
        assert figs[name]["rss"] == pytest.approx(fig["rss"], abs=1.5)
        assert figs[name]["pss_anon"] >= 8
    assert figs["caddy"]["rss"] == 0 and figs["site_pm2"]["rss"] == 0
    assert figs["stack"]["pss"] == pytest.approx(sum(figs[n]["pss"] for n in own), abs=0.2)
    assert figs["backend"]["pss"] == pytest.approx(figs["web"]["pss"] + figs["worker"]["pss"], abs=0.2)
    # three Pythons share the interpreter's pages: the PSS sum is below the RSS sum
    assert figs["stack"]["pss"] < figs["stack"]["rss"] - 1


def test_nothing_read_is_an_error_not_a_zero(started):
    """Without root another user's smaps_rollup is unreadable: that must not report 0 MB."""
    web = started("app", "web")

    class Denied(LocalHost):
        def ssh(self, command, quiet=False, check=True):
            if command.startswith("ps "):
                return super().ssh(command, quiet, check)
            return subprocess.run(["sh", "-c", "true"], capture_output=True, text=True)

    with pytest.raises(RuntimeError, match="root needed"):
        on_host.stack_smaps(Denied([web.pid]), sudo="")
