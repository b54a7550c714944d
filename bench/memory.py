"""Memory (item 6): RSS of web and worker, idle and after work, and what each import costs.

- Idle RSS, and beside it PSS, USS and the anonymous/file-backed split (bench/_memfig.py): the
  real processes (`python -m app web`, `python -m app worker`) started against a
  private redis-server and the bench database, read from /proc after they settle.
- Web after load: after 2,000 health requests (bench/health_latency.py's loader).
- Worker after 10,000 checks: from bench/results/throughput.json (its 10,000-check drain).
- A Next.js standalone server alone (the site fixture's cached build, `node server.js`:
  bench/_nextjs.py), beside the two: what the site's server holds without its PM2 daemon.
- Import cost: `python -X importtime` of what each process imports (web: app.web.routes; worker:
  app.tasks plus huey's consumer), self time summed per top-level package, and the RSS of a
  bare interpreter versus one that imported it.

All of it in a virtualenv with the runtime dependencies only (.venv-runtime, made once with
`pip install -e .`), as the server's release has: the development venv also holds pyinfra, whose
gevent huey's consumer module then imports (+4 MB that production never has).
Prints figures, writes bench/results/memory.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _memfig, _nextjs, _stats as S  # noqa: E402
from bench._stats import ROOT  # noqa: E402
from bench._env import app_env, bench_database, migrate, redis_server, stop  # noqa: E402
from bench.health_latency import open_loop, start_web  # noqa: E402

IMPORTS = {
    "web": "import app.web.routes, app.web.serving",
    "worker": "import app.tasks, app.queue.worker, huey.bin.huey_consumer, huey.consumer",
}


RUNTIME = ROOT / ".venv-runtime"
PY = str(RUNTIME / "bin" / "python")


def runtime_venv() -> None:
    """The runtime-only virtualenv, made (or brought up to date) with pip."""
    stamp = RUNTIME / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= (ROOT / "pyproject.toml").stat().st_mtime:
        return
    subprocess.run([sys.executable, "-m", "venv", str(RUNTIME)], check=True)
    subprocess.run([PY, "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    stamp.touch()


def import_cost(env: dict, statement: str) -> dict:
    """Self import time per top-level package (ms), and the RSS the imports add (MB)."""
    cp = subprocess.run([PY, "-X", "importtime", "-c", statement], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=True)
    per_package: Counter = Counter()
    total = 0
    for line in cp.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            per_package[m.group(4).split(".")[0]] += int(m.group(1)) / 1000
            if not m.group(3).strip() and len(m.group(3)) == 1:
                total += int(m.group(2)) / 1000
    rss = {}
    for label, stmt in (("bare", "pass"), ("imported", statement)):
        cp = subprocess.run([PY, "-c", f"{stmt}\nimport os\nprint(open('/proc/self/status').read())"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        rss[label] = int(re.search(r"VmRSS:\s+(\d+)", cp.stdout).group(1)) * 1024 / 1e6
    top = dict(sorted(per_package.items(), key=lambda kv: -kv[1])[:12])
    return {"import_ms_total": total, "self_ms_by_package": {k: round(v, 1) for k, v in top.items()},
            "rss_bare_mb": rss["bare"], "rss_after_imports_mb": rss["imported"],
            "rss_imports_add_mb": rss["imported"] - rss["bare"]}


def settle_rss(pid: int, seconds: float = 3) -> float:
    time.sleep(seconds)
    return S.rss_mb(pid)


def main() -> None:
    runtime_venv()
    database_url = bench_database()
    figures: dict = {}
    with redis_server() as redis_url:
        env = app_env(redis_url, database_url)
        migrate(env)
        for name, stmt in IMPORTS.items():
            figures[f"{name}_imports"] = import_cost(env, stmt)
        worker = subprocess.Popen([PY, "-m", "app", "worker"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        web, port = start_web(env, python=PY)
        try:
            samples_web, samples_worker = [], []
            for _ in range(S.REPEATS):
                samples_worker.append(settle_rss(worker.pid, 5))
                samples_web.append(S.rss_mb(web.pid))
            figures["web_idle_mb"] = S.summary(samples_web)
            figures["worker_idle_mb"] = S.summary(samples_worker)
            # What the two take from the machine: PSS (libpython and the shared libraries they
            # both map counted once between them), USS, anonymous vs file-backed.
            figures["web_idle_smaps"] = _memfig.of_pid(web.pid)
            figures["worker_idle_smaps"] = _memfig.of_pid(worker.pid)
            figures["web_plus_worker_idle_smaps"] = _memfig.total(
                [figures["web_idle_smaps"], figures["worker_idle_smaps"]])
            open_loop(port, rate=200, seconds=10)
            figures["web_after_2000_health_mb"] = settle_rss(web.pid, 1)
        finally:
            stop(web, 20)
            stop(worker)
    figures["nextjs_standalone_alone"] = _nextjs.measure()
    tp = S.RESULTS / "throughput.json"
    if tp.exists():
        after = json.loads(tp.read_text()).get("worker_rss_after_run", {})
        figures["worker_after_run_mb"] = after.get("worker_rss_mb")
        figures["worker_after_run_checks"] = after.get("n")
    figures["web_plus_worker_idle_mb"] = figures["web_idle_mb"]["median"] + figures["worker_idle_mb"]["median"]
    print(f"memory (load {S.loadavg():.2f}):")
    print(f"  web idle {S.fmt(figures['web_idle_mb'], ' MB', 1)}, after 2,000 health requests "
          f"{figures['web_after_2000_health_mb']:.1f} MB")
    print(f"  worker idle {S.fmt(figures['worker_idle_mb'], ' MB', 1)}, after a "
          f"{figures.get('worker_after_run_checks')}-check run {figures.get('worker_after_run_mb')} MB")
    print(f"  web + worker idle {figures['web_plus_worker_idle_mb']:.1f} MB RSS (target <= 90)")
    for name in ("web", "worker", "web_plus_worker"):
        print(f"  {name} idle: {_memfig.brief(figures[name + '_idle_smaps'])}")
    nx = figures["nextjs_standalone_alone"]
    print(f"  Next.js standalone server alone: {_memfig.brief(nx['at_rest'])}" if "at_rest" in nx
          else f"  Next.js standalone server alone: skipped ({nx['skipped']})")
    for name in IMPORTS:
        f = figures[f"{name}_imports"]
        print(f"  {name} imports: {f['import_ms_total']:.0f} ms, +{f['rss_imports_add_mb']:.1f} MB RSS; "
              f"self ms by package {f['self_ms_by_package']}")
    S.write("memory", figures)


if __name__ == "__main__":
    main()
