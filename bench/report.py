"""bench/results/README.md and the PNG plots, from the JSON the benchmarks wrote.

Run by bench/run_all.py (`make bench`); `python bench/report.py` redoes the report alone.
A figure whose JSON is missing is listed as "not run".
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402


def load(name: str) -> dict | None:
    path = S.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def spread(s: dict, digits: int = 2, unit: str = "") -> str:
    if s["runs"] == 1:
        return f"{s['median']:.{digits}f}{unit}"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f}, n={s['runs']})"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def plots(tp: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    # drain ratio vs N, one line per scraper latency
    fig, ax = plt.subplots(figsize=(6, 4))
    for latency in sorted({c["latency_s"] for c in tp["drain"]}):
        cells = sorted((c for c in tp["drain"] if c["latency_s"] == latency), key=lambda c: c["n"])
        ax.errorbar([c["n"] for c in cells], [100 * c["ratio"]["median"] for c in cells],
                    yerr=[[100 * (c["ratio"]["median"] - c["ratio"]["min"]) for c in cells],
                          [100 * (c["ratio"]["max"] - c["ratio"]["median"]) for c in cells]],
                    marker="o", capsize=3, label=f"L = {latency * 1000:.0f} ms")
    ax.axhline(95, color="grey", linestyle="--", label="target 95 %")
    ax.set_xscale("log")
    ax.set_xlabel("checks N")
    ax.set_ylabel("drain ratio, % of N·L/4")
    ax.set_title("Drain ratio, 4 workers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(S.RESULTS / "drain_ratio.png", dpi=100)
    made.append("drain_ratio.png")
    # drain vs workers
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = tp["workers_curve"]
    ax.plot([p["workers"] for p in pts], [p["seconds"]["median"] for p in pts], marker="o", label="measured")
    ax.plot([p["workers"] for p in pts], [p["limit_s"] for p in pts], linestyle="--", label="limit N·L/W")
    ax.set_xlabel("worker threads W")
    ax.set_ylabel("seconds to drain")
    p0 = pts[0]
    ax.set_title(f"Drain of {p0['n']} checks, L = {p0['latency_s'] * 1000:.0f} ms")
    ax.set_xticks([p["workers"] for p in pts])
    ax.legend()
    fig.tight_layout()
    fig.savefig(S.RESULTS / "drain_workers.png", dpi=100)
    made.append("drain_workers.png")
    # latency distribution
    lat = tp["latency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = lat["latencies_ms"]
    ax.plot(xs, [100 * (i + 1) / len(xs) for i in range(len(xs))])
    ax.axvline(2000, color="grey", linestyle="--", label="target 2 s")
    ax.set_xscale("log")
    ax.set_xlabel("seat seen → email accepted, ms")
    ax.set_ylabel("% of changes")
    ax.set_title(f"Latency over {lat['changes']} changes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(S.RESULTS / "latency.png", dpi=100)
    made.append("latency.png")
    plt.close("all")
    return made


def main() -> str:
    cc, cr, rc, hl, tp, mem, host, run, bq, rt, hd, site_host = (load(n) for n in (
        "check_cost", "cron_run", "redis_commands", "health_latency", "throughput", "memory",
        "on_host", "run", "bullmq_compare", "db_round_trips", "health_under_drain", "on_host_site"))
    rows: list[tuple[str, str, str, str]] = []

    def row(item, figure, target, ok):
        rows.append((item, figure, target, verdict(ok)))

    if bq:
        v = bq["versions"]
        row(f"0 vs BullMQ {v['bullmq']}: {bq['n']:,} no-ops, {bq['workers']} workers, ours ÷ BullMQ",
            f"{spread(bq['drain_ratio'], 2)} (ours {spread(bq['ours_drain_s'], 2, ' s')}, BullMQ "
            f"{spread(bq['bullmq_drain_s'], 2, ' s')})", "≤ 1.0", bq["drain_ratio"]["median"] <= 1.0)
        row(f"0 vs BullMQ: cron run for {bq['n']:,} sections ÷ addBulk of {bq['n']:,}",
            f"{spread(bq['cron_ratio'], 2)} (ours {spread(bq['ours_cron_s'], 3, ' s')}, BullMQ "
            f"{spread(bq['bullmq_add_bulk_s'], 3, ' s')})", "≤ 1.0", bq["cron_ratio"]["median"] <= 1.0)

    if tp:
        for c in tp["drain"]:
            # issue 20's targets: 90 % where the scraper answers in 50 ms, 95 % from 200 ms on
            floor = 0.90 if c["latency_s"] < 0.2 else 0.95
            row("1 drain ratio", f"N={c['n']}, L={c['latency_s'] * 1000:.0f} ms: "
                f"{spread({k: v * 100 for k, v in c['ratio'].items() if k != 'values'} | {'runs': c['ratio']['runs']}, 1, ' %')}"
                f" ({spread(c['seconds'], 1, ' s')} vs limit {c['limit_s']:.1f} s"
                + (f"; one stand-in call alone {c['scraper_call_ms']:.1f} ms" if "scraper_call_ms" in c else "")
                + ")", f"≥ {floor * 100:.0f} %",
                c["ratio"]["median"] >= floor)
        for p in tp["workers_curve"]:
            floor = 0.90 if p["latency_s"] < 0.2 else 0.95
            row("1 drain vs workers", f"W={p['workers']}, L={p['latency_s'] * 1000:.0f} ms: "
                f"{100 * p['ratio']['median']:.1f} % ({spread(p['seconds'], 2, ' s')} vs {p['limit_s']:.2f} s)",
                f"≥ {floor * 100:.0f} %", p["ratio"]["median"] >= floor)
    if cc:
        row("2 quiet check CPU", spread(cc["quiet"]["cpu_ms"], 2, " ms"), "≤ 2 ms", cc["quiet"]["cpu_ms"]["median"] <= 2)
        if "quiet_before_issue_20" in cc:
            row("2 quiet check CPU, code before issue 20 (same run)",
                spread(cc["quiet_before_issue_20"]["cpu_ms"], 2, " ms"), "", None)
            row("2 quiet check wall excl. scraper, code before issue 20 (same run)",
                spread(cc["quiet_before_issue_20"]["wall_ms_excl_scraper"], 2, " ms"), "", None)
        row("2 quiet check wall excl. scraper", spread(cc["quiet"]["wall_ms_excl_scraper"], 2, " ms"), "–", None)
        row("2 notifying check (100 watchers) CPU", spread(cc["notifying"]["cpu_ms"], 1, " ms"), "≤ 20 ms",
            cc["notifying"]["cpu_ms"]["median"] <= 20)
        row("2 notifying check wall excl. scraper", spread(cc["notifying"]["wall_ms_excl_scraper"], 1, " ms"), "–", None)
    if rt:
        rtt = 2 * rt["delay_ms_each_way"]
        row(f"2 quiet check wall excl. scraper, database {rtt:g} ms round trip away",
            f"{spread(rt['quiet_wall_ms_excl_scraper'], 2, ' ms')} vs "
            f"{spread(rt['quiet_wall_ms_excl_scraper_before_issue_20'], 2, ' ms')} as before issue 20 "
            f"(same run): the difference is {rt['round_trips_saved']['median']:.1f} round trips' time "
            "(one round trip fewer, and the requests client's CPU)", "–", None)
    if tp:
        row("2 consumer CPU per check (in the drain, queue included)",
            f"{tp['drain'][0]['consumer_cpu_ms_per_check']['median']:.2f} ms", "–", None)
        q = tp["queue_overhead"]
        row(f"3 queue: {q['tasks']:,} no-ops, 4 workers", f"{spread(q['seconds'], 2, ' s')}, "
            f"{q['redis_commands_per_task']['median']:.2f} Redis commands/task", "≤ 2.0 s", q["seconds"]["median"] <= 2.0)
    if cr:
        row(f"4 cron run, {cr['sections']} sections", spread(cr["seconds"], 3, " s") + "; " + ", ".join(
            f"{k} {v['median']:.3f} s" for k, v in cr["steps_seconds"].items()), "≤ 0.3 s", cr["seconds"]["median"] <= 0.3)
    if rc:
        row("5 Redis commands per quiet check", f"{rc['quiet_check']['commands']:.2f} "
            f"(+{rc['quiet_check']['script_inner']:.0f} inside the breaker's script)", "–", None)
        row("5 per notifying check", f"{rc['notifying_check']['commands']:.2f}", "–", None)
        row("5 per idle day (deploy's settings)", f"{rc['idle']['per_day']:,.0f}", "–", None)
        row("5 500K commands/month carries", f"~{rc['capacity']['sections_hourly']:,.0f} sections checked hourly "
            f"(~{rc['capacity']['sections_hourly_if_script_calls_billed']:,.0f} if script calls are billed)", "–", None)
    if mem:
        row("6 web RSS idle", spread(mem["web_idle_mb"], 1, " MB"), "", None)
        row("6 worker RSS idle", spread(mem["worker_idle_mb"], 1, " MB"), "", None)
        row("6 web + worker idle, RSS sum", f"{mem['web_plus_worker_idle_mb']:.1f} MB", "", None)
        if "web_plus_worker_idle_smaps" in mem:
            # judged on what the two take from the machine (README, "Which memory figure")
            sm = mem["web_plus_worker_idle_smaps"]
            row("6 web + worker idle, PSS sum (alone: anon + one copy of their file pages)",
                f"{sm['pss']:.1f} MB (alone ~{sm['alone']:.1f} MB; anon {sm['rss_anon']:.1f}, USS {sm['uss']:.1f})",
                "≤ 90 MB", sm["alone"] <= 90)
        nx = mem.get("nextjs_standalone_alone", {}).get("at_rest")
        if nx:
            row("6 Next.js standalone server alone (site fixture, node server.js)",
                f"RSS {nx['rss']:.1f} MB, PSS {nx['pss']:.1f} (anon {nx['rss_anon']:.1f}, file {nx['rss_file']:.1f}), "
                f"USS {nx['uss']:.1f}", "", None)
        row("6 web after 2,000 health requests", f"{mem['web_after_2000_health_mb']:.1f} MB", "", None)
        if mem.get("worker_after_run_mb"):
            row(f"6 worker after a {mem['worker_after_run_checks']}-check run", f"{mem['worker_after_run_mb']:.1f} MB",
                "", None)
    for figures, where in ((host, "backend-only test host (Debian 12)"),
                           (site_host, "test host with the site (Debian 13)")):
        if not figures:
            continue
        m = figures["stack_memory_mb"]
        sm = figures.get("stack_smaps_mb")
        # before issue 30 on_host.json had RSS only, judged as such
        row(f"6 whole stack on the {where}, RSS sum", f"{m['stack']:.0f} MB ({m})", "" if sm else "≤ 200 MB",
            None if sm else m["stack"] <= 200)
        if sm and figures is host:
            row(f"6 whole stack on the {where}, PSS sum", f"{sm['stack']['pss']:.0f} MB (RSS sum "
                f"{sm['stack']['rss']:.0f}, anon {sm['stack']['rss_anon']:.0f}; PM2's daemon PSS "
                f"{sm['pm2']['pss']:.0f})", "≤ 200 MB", sm["stack"]["pss"] <= 200)
        if sm and figures is site_host:
            row(f"6 whole stack on the {where}, PSS sum", f"{sm['stack']['pss']:.0f} MB (RSS sum {sm['stack']['rss']:.0f}; "
                f"backend's processes {sm['backend']['pss']:.0f}; Next.js server alone: RSS {sm['site']['rss']:.0f}, "
                f"PSS {sm['site']['pss']:.0f}; its PM2 daemon: PSS {sm['site_pm2']['pss']:.0f})", "≤ 350 MB",
                sm["stack"]["pss"] <= 350)
        h = figures["health_through_caddy"]
        row(f"7 health through Caddy, 100/s, {where}", f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms", "–", None)
        d = figures.get("under_drain")
        if d:
            hd_ = d["health_through_caddy"]
            row(f"7 health through Caddy under a {d['n']:,}-check drain, {where}",
                f"p50 {hd_['p50_ms']:.1f} ms, p99 {hd_['p99_ms']:.1f} ms, max {hd_['max_ms']:.0f} ms "
                f"(drain {d['drain_seconds']:.0f} s)", "p99 ≤ 20 ms", hd_["p99_ms"] <= 20)
    if not host and not site_host:
        row("6 whole stack on the test host", "not run here (bench/on_host.py, from the deploy harness)", "≤ 200 MB", None)
        row("7 health through Caddy", "not run here (bench/on_host.py)", "–", None)
    if hl:
        d = hl["direct"]
        row("7 health directly on waitress, 100/s", f"p50 {spread(d['p50_ms'], 2, ' ms')}, p99 {spread(d['p99_ms'], 2, ' ms')}",
            "p99 ≤ 20 ms", d["p99_ms"]["median"] <= 20)
    if hd:
        for key, label in (("separate", "web and worker apart (deploy)"), ("one_process", "web + worker in one process (bench-only)")):
            x = hd[key]
            h = x["health_under_drain"]
            row(f"7 health on waitress under a {hd['n']:,}-check drain, {label}",
                f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms (first 5 s after start, idle, warm-up included: p99 {x['health_idle']['p99_ms']:.1f}); "
                f"drain {x['drain_seconds']:.0f} s vs limit {x['drain_limit_seconds']:.0f} s; at rest PSS "
                f"{x['at_rest']['sum']['pss']:.1f} MB, alone ~{x['at_rest']['sum']['alone']:.1f} MB",
                "p99 ≤ 20 ms", h["p99_ms"] <= 20)
    if tp:
        lat = tp["latency"]
        row(f"8 seat seen → email accepted ({lat['changes']} changes)",
            f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms", "≤ 2 s", lat["p99_ms"] <= 2000)

    any_json = next((x for x in (tp, cc, cr, rc, hl, mem, bq) if x), None)
    m = any_json["machine"] if any_json else S.machine()
    mode = "quick (BENCH_QUICK=1)" if any_json and any_json["quick"] else "full grid (BENCH_FULL=1)" if any_json and any_json["full"] else "default"
    loads = [x.get("machine", {}).get("load_1min_at_start") for x in (bq, cc, cr, rc, hl, tp, mem, hd) if x]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({mode}; command: `make bench`, or `.venv/bin/python bench/run_all.py`) "
        f"at {any_json['taken_at'] if any_json else '?'}.",
        "",
        f"Machine: `{m['arch']}`, {m['cores']} cores, Python {m['python']}, Redis {m['redis']}, "
        f"PostgreSQL {m['postgresql']}, Linux {m['kernel']}. 1-minute load average when each benchmark "
        f"started: {', '.join(str(v) for v in loads)} (on {m['cores']} cores; anything near or above 1 means "
        "other work shared the machine and the figures are pessimistic).",
        "",
        "Each figure is the median of repeated runs with the spread (min–max, n runs) where repeated; "
        "what each benchmark does is in its docstring. The scraper and Resend are the stand-ins of "
        "tests/fakes.py in a process of their own (bench/_standins.py).",
        "",
        *([f"Item 0 is bench/bullmq_compare.py: BullMQ {bq['versions']['bullmq']} (ioredis "
           f"{bq['versions']['ioredis']}, Node.js {bq['versions']['node']}, bench/bullmq/) and ours on one "
           "private redis-server, each ratio taken within one round (all three measurements one right "
           "after the other) and the median of the rounds given with their spread; 1-minute load in "
           f"each round: {', '.join(str(r['load_1min']) for r in bq['rounds'])}.", ""] if bq else []),
        "| item | figure | target | |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]
    profiles = sorted(p.name for p in S.RESULTS.glob("profile_*.txt"))
    lines += ["## Missed targets", "",
              "Why each missed target is missed and what would close it: the README's "
              "[Performance](../../README.md#performance) section. Profiles of the check "
              "(pyinstrument, wall time, one uncounted pass): "
              + (", ".join(f"[{p}]({p})" for p in profiles) or "none (run with BENCH_PROFILE=1)") + ". "
              "Items 6 (whole stack) and 7 (through Caddy) on deployed test hosts: bench/on_host.py, "
              "run by hand, not by `make bench`: `python -m bench.on_host --own NAME DATABASE N` (a "
              "backend-only Debian 12 host: bench/results/on_host.json) and the same with `--site` (Debian 13 "
              "with the site fixture: on_host_site.json), or `python -m bench.on_host swsandbox` against "
              "`make sandbox [SITE=1]`; "
              + "; ".join(f"{f} taken at {x['taken_at']}" for f, x in (("on_host.json", host),
                          ("on_host_site.json", site_host)) if x)
              + ("." if host or site_host else "no figures yet.")
              + " Through Caddy the load comes from this machine's Python client over a veth, TLS "
              "included, open loop: its p99 is the client's as much as Caddy's.",
              ""]
    if tp:
        made = plots(tp)
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in made] + [""]
    if run:
        lines += ["## Run", "", "| benchmark | seconds | exit |", "| --- | --- | --- |"]
        lines += [f"| bench/{b['name']}.py | {b['seconds']} | {b['rc']} |" for b in run["benches"]]
        lines += ["", f"Total: {run['total_seconds']:.0f} s.", ""]
    out = S.RESULTS / "README.md"
    out.write_text("\n".join(lines))
    return str(out.relative_to(S.ROOT))


if __name__ == "__main__":
    print(main())
