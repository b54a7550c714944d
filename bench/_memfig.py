"""What a process really takes from the machine: RSS beside PSS, USS and the anon/file split.

RSS counts every page a process maps, shared or not: two Python processes that map the same
libpython pages, or PM2 and Next.js the same node binary, each count them in full, so a sum of RSS
overstates what a stack takes. PSS (proportional set size) splits each shared page between the
processes that map it, so the PSS of every process of a stack sums to the physical memory the
stack holds (a page shared by all of them counted once). USS (Private_Clean + Private_Dirty) is
what the process alone holds: what stopping it would give back. Anonymous memory (heap, stacks)
cannot be dropped without swap; file-backed pages (code, mapped libraries) can be reclaimed and
re-read under pressure, and are shared with every other process mapping the same file.

Sources: /proc/<pid>/smaps_rollup (Rss, Pss, Pss_Anon, Pss_File, Private_*, Anonymous; Linux
>= 5.x for the Pss_ split) and /proc/<pid>/status (VmRSS, RssAnon, RssFile, RssShmem). Reading
another user's smaps_rollup needs root (bench/on_host.py reads them over ssh as root).
Figures in MB (10^6 bytes), as bench/_stats.rss_mb.
"""

from __future__ import annotations

from pathlib import Path

# The fields kept, under the names the reports use.
ROLLUP = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file",
          "Pss_Shmem": "pss_shmem", "Shared_Clean": "shared_clean", "Shared_Dirty": "shared_dirty",
          "Private_Clean": "private_clean", "Private_Dirty": "private_dirty",
          "Anonymous": "anon", "Swap": "swap"}
STATUS = {"RssAnon": "rss_anon", "RssFile": "rss_file", "RssShmem": "rss_shmem"}


def _fields(text: str, wanted: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in wanted:
            value = rest.split()
            if len(value) != 2 or value[1] != "kB":
                raise ValueError(f"unexpected {key} line: {line!r}")
            out[wanted[key]] = int(value[0]) * 1024 / 1e6
    return out


def parse(rollup: str, status: str = "") -> dict[str, float]:
    """Figures (MB) from the text of smaps_rollup and, optionally, of status. Raises ValueError
    when Rss or Pss is missing (not a smaps_rollup: a kernel without it, or an unreadable file)."""
    fig = _fields(rollup, ROLLUP)
    if "rss" not in fig or "pss" not in fig:
        raise ValueError("no Rss/Pss lines: not a /proc/<pid>/smaps_rollup")
    fig.update(_fields(status, STATUS))
    fig["uss"] = fig.get("private_clean", 0.0) + fig.get("private_dirty", 0.0)
    return fig


def of_pid(pid: int) -> dict[str, float]:
    """This machine's process `pid` (same user or root)."""
    proc = Path(f"/proc/{pid}")
    return parse((proc / "smaps_rollup").read_text(), (proc / "status").read_text())


KEYS = ("rss", "pss", "uss", "pss_anon", "pss_file", "rss_anon", "rss_file")


def total(figures: list[dict[str, float]]) -> dict[str, float]:
    """A stack's sums: PSS sum = its physical memory (shared pages once); RSS sum beside it.

    PSS splits a file page among every process on the machine that maps it, so on a machine
    where other processes map the same files (this development machine's many Pythons) the PSS
    sum understates what the stack would hold alone. `alone` estimates that: the anonymous
    memory summed plus the largest file-backed RSS among the processes (their file pages counted
    once, as if all of them mapped the same files: true for web and worker, one libpython and
    the same libraries); on a dedicated host the PSS sum is the exact figure."""
    out = {k: sum(f.get(k, 0.0) for f in figures) for k in KEYS}
    out["alone"] = out["rss_anon"] + max((f.get("rss_file", 0.0) for f in figures), default=0.0)
    return out


def brief(fig: dict[str, float]) -> str:
    return (f"RSS {fig['rss']:.1f}, PSS {fig['pss']:.1f} (anon {fig.get('pss_anon', 0):.1f}, "
            f"file {fig.get('pss_file', 0):.1f}), USS {fig['uss']:.1f}"
            + (f", alone ~{fig['alone']:.1f}" if "alone" in fig else "") + " MB")
