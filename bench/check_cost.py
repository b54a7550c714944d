"""Per-check cost with an instant scraper (item 2): CPU ms and wall ms per check, scraper excluded.

Also the same quiet checks as the code ran them before issue 20 (bench: as_before), interleaved
with the current ones, so the saving is measured on the same machine at the same time.

The check runs in this process (app.check.run.check_section with the process's real Services), the
stand-in scraper and Resend in another, so this process's CPU time is ours alone: the breaker's
Redis calls, the HTTP client, the PostgreSQL transaction, change detection, and for a notifying
check the claims, 100 emails rendered and stored, the Resend batch and its bookkeeping. Wall time
excludes the time spent inside the scraper call (the client's own share of it is still counted as
CPU). Quiet: a section whose stored state already matches. Notifying: 100 watchers, seats 0 -> 5.

BENCH_PROFILE=1 (as `make bench` runs it) also writes pyinstrument profiles of one extra,
uncounted pass of each (bench/results/profile_*.txt).
Prints figures, writes bench/results/check_cost.json.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import bench_service, seed_watchers  # noqa: E402

QUIET = 100 if S.QUICK else 300
NOTIFYING = 3 if S.QUICK else 8
WATCHERS = 100
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")


class TimedScraper:
    """Wraps the scraper client to add up the wall time spent inside its calls."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def fetch(self, term, class_nbr):
        started = time.perf_counter()
        try:
            return self.inner.fetch(term, class_nbr)
        finally:
            self.seconds += time.perf_counter() - started


def measure(services, calls) -> tuple[float, float]:
    """(CPU ms, wall ms without the scraper) per call of `calls` (a list of thunks)."""
    timed = services.scraper
    timed.seconds = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for call in calls:
        call()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0 - timed.seconds
    return cpu * 1000 / len(calls), wall * 1000 / len(calls)


class RequestsScraper:
    """The scraper client as it was before issue 20: requests' Session, its settings merged once."""

    def __init__(self, url: str, token: str, timeout: float):
        import requests

        self.session, self.url, self.token, self.timeout = requests.Session(), url, token, timeout
        self.env = self.session.merge_environment_settings(url, {}, None, None, None)
        self.session.trust_env = False

    def fetch(self, term: str, class_nbr: str):
        from app.check.scraper import parse_section

        resp = self.session.post(self.url, json={"sectionNumber": class_nbr, "term": term},
                                 headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=(min(5.0, self.timeout), self.timeout), **self.env)
        return parse_section(resp.json())


@contextmanager
def as_before(services):
    """The quiet check's path as it was before issue 20: the scraper called through requests,
    and psycopg_pool's round-trip check on every connection the check takes from the pool."""
    from app import db

    timed, real_transaction = services.scraper, db.transaction
    saved = timed.inner
    timed.inner = RequestsScraper(saved.url, saved.token, saved.timeout)
    db.transaction = lambda pool, quick_check=False: real_transaction(pool, quick_check=False)
    try:
        yield
    finally:
        timed.inner, db.transaction = saved, real_transaction


def profiled(name: str, fn):
    if not PROFILE:
        return fn()
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        return fn()
    finally:
        profiler.stop()
        (S.RESULTS / f"profile_{name}.txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    with bench_service(standins=True) as (env, si):
        database_url = env["DATABASE_URL"]
        from app.check.run import check_section
        from app.services import get_services

        services = get_services()
        services.scraper = TimedScraper(services.scraper)
        si.scraper("/_delay", seconds=0)

        # quiet: baselines first (not measured), then checks that find nothing new
        sections = [("2261", f"{30000 + i:05d}") for i in range(QUIET)]
        for term, nbr in sections[:20]:
            check_section(services, term, nbr)  # warm up: pools, templates, scripts
        for term, nbr in sections:
            check_section(services, term, nbr)
        quiet, before = [], []
        calls = [lambda t=t, n=n: check_section(services, t, n) for t, n in sections]
        for rep in range(S.REPEATS):
            quiet.append(measure(services, calls))
            # the same checks as the code was before issue 20, interleaved so that both see the
            # same machine: what the changes saved, measured rather than remembered
            with as_before(services):
                before.append(measure(services, calls))
        profiled("quiet_check", lambda: measure(services, calls))  # a pass of its own, not counted
        # notifying: 100 watchers of one section; each round fills the seats (not measured,
        # it clears the notifications) and opens them again (measured)
        term, nbr = "2262", "40000"
        seed_watchers(database_url, term, [nbr], per_section=WATCHERS, prefix="n")
        check_section(services, term, nbr)  # baseline, no seats
        notifying, sent = [], 0
        for rep in range(NOTIFYING + (1 if PROFILE else 0)):
            si.scraper("/_section", sections=[[term, nbr]], seats=0)
            check_section(services, term, nbr)
            si.scraper("/_section", sections=[[term, nbr]], seats=5)

            def one():
                nonlocal sent
                sent += check_section(services, term, nbr).delivered

            if rep == NOTIFYING:  # the extra, profiled round: not counted
                profiled("notifying_check", lambda: measure(services, [one]))
            else:
                notifying.append(measure(services, [one]))
        assert sent == WATCHERS * (NOTIFYING + (1 if PROFILE else 0)), sent
        services.close()

    figures = {
        "quiet": {"checks": QUIET, "cpu_ms": S.summary([c for c, _ in quiet]),
                  "wall_ms_excl_scraper": S.summary([w for _, w in quiet])},
        "quiet_before_issue_20": {"checks": QUIET, "cpu_ms": S.summary([c for c, _ in before]),
                                  "wall_ms_excl_scraper": S.summary([w for _, w in before])},
        "notifying": {"watchers": WATCHERS, "checks": NOTIFYING,
                      "cpu_ms": S.summary([c for c, _ in notifying]),
                      "wall_ms_excl_scraper": S.summary([w for _, w in notifying])},
    }
    print(f"per-check cost, instant scraper (load {S.loadavg():.2f}):")
    for name, f in figures.items():
        print(f"  {name:21s} CPU {S.fmt(f['cpu_ms'], ' ms')}, wall excl. scraper "
              f"{S.fmt(f['wall_ms_excl_scraper'], ' ms')}")
    S.write("check_cost", figures)


if __name__ == "__main__":
    main()
