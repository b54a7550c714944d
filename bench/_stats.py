"""What every benchmark shares: repeats and their spread, the machine, RSS, Redis counters, results.

A figure is the median of BENCH_REPEATS runs (default 3, 1 in quick mode) with its spread
(min-max), so a rerun on a quiet machine can be compared within noise. Each benchmark writes its
figures as JSON under bench/results/; bench/report.py turns them into bench/results/README.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
FULL = os.environ.get("BENCH_FULL", "") not in ("", "0")
REPEATS = int(os.environ.get("BENCH_REPEATS", "1" if QUICK else "3"))


def summary(values: list[float]) -> dict:
    """Median and spread of repeated measurements."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values), "values": values}


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank on the sorted sample; no interpolation games)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def fmt(s: dict, unit: str = "", digits: int = 2) -> str:
    if s["runs"] == 1:
        return f"{s['median']:.{digits}f}{unit}"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f}, {s['runs']} runs)"


def rss_mb(pid: int) -> float:
    """Resident set size of one process (VmRSS), in MB (10^6 bytes, as ps and PM2 print MiB ~ same)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return os.getloadavg()[0]


def machine() -> dict:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "not found"

    redis_v = version(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0]
    pg_v = version(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version"])
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_v,
        "postgresql": pg_v.split(" ")[0] if pg_v else "unknown",
        "kernel": platform.release(),
        "load_1min_at_start": round(loadavg(), 2),
    }


def redis_calls(client) -> dict[str, int]:
    """Commands processed so far, by command (INFO commandstats)."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def calls_between(before: dict, after: dict, ignore=("info",)) -> dict[str, int]:
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {k: v for k, v in sorted(out.items()) if v > 0 and k not in ignore}


def write(name: str, figures: dict) -> Path:
    """bench/results/<name>.json: the figures, the machine and the load while they were taken."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    figures = {"name": name, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "quick": QUICK, "full": FULL, "repeats": REPEATS, "machine": machine(),
               "load_1min_at_end": round(loadavg(), 2), **figures}
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return path


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        time.sleep(interval)
