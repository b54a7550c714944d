"""What the check's database round trips cost when the database is a network away (item 2).

The same quiet checks as bench/check_cost.py, in this process, with PostgreSQL reached through
bench/_latencyproxy.py, which delays every byte by DELAY_MS each way (a round trip DELAY_MS x 2
more): this service's database is Supabase, reached over the internet or a pooler, never a local
socket. Each round: the checks as the code runs them (no check round trip for a connection just
used), then as the code was before issue 20 (check_cost.as_before: requests client, the pool's
check round trip on every checkout), interleaved. Wall time excludes the scraper call. Saved
round trips are derived: (before - now) / (2 x DELAY_MS); the requests client's extra CPU is in
that difference too (~0.5 ms, bench/check_cost.py).

Prints figures, writes bench/results/db_round_trips.json.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _stats as S  # noqa: E402
from bench._env import bench_service  # noqa: E402
from bench.check_cost import TimedScraper, as_before, measure  # noqa: E402

DELAY_MS = 1.0  # each way: a 2 ms round trip, a database in the same region
CHECKS = 50 if S.QUICK else 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    with bench_service(standins=True) as (env, si):
        from app.check.run import check_section
        from app.services import Services
        from app.settings import get_settings

        dsn = urlsplit(env["DATABASE_URL"])
        port = _free_port()
        proxy = subprocess.Popen([sys.executable, "-m", "bench._latencyproxy", str(port),
                                  str(dsn.port or 5432), str(DELAY_MS)],
                                 cwd=S.ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert proxy.stdout.readline().strip() == "ready"
            netloc = dsn.netloc.rsplit(":", 1)[0] if dsn.port else dsn.netloc
            proxied = urlunsplit(dsn._replace(netloc=f"{netloc.replace('localhost', '127.0.0.1')}:{port}"))
            services = Services(dataclasses.replace(get_settings(), database_url=proxied))
            services.scraper = TimedScraper(services.scraper)
            si.scraper("/_delay", seconds=0)
            sections = [("2261", f"{50000 + i:05d}") for i in range(CHECKS)]
            for term, nbr in sections:
                check_section(services, term, nbr)  # baselines, not measured
            calls = [lambda t=t, n=n: check_section(services, t, n) for t, n in sections]
            now, before = [], []
            for _ in range(S.REPEATS):
                now.append(measure(services, calls)[1])
                with as_before(services):
                    before.append(measure(services, calls)[1])
            services.close()
        finally:
            proxy.kill()
            proxy.wait()
    saved = [(b - n) / (2 * DELAY_MS) for n, b in zip(now, before)]
    figures = {"delay_ms_each_way": DELAY_MS, "checks": CHECKS,
               "quiet_wall_ms_excl_scraper": S.summary(now),
               "quiet_wall_ms_excl_scraper_before_issue_20": S.summary(before),
               "round_trips_saved": S.summary(saved)}
    print(f"quiet check, database {2 * DELAY_MS:g} ms round trip away (load {S.loadavg():.2f}): "
          f"wall excl. scraper {S.fmt(figures['quiet_wall_ms_excl_scraper'], ' ms')} now, "
          f"{S.fmt(figures['quiet_wall_ms_excl_scraper_before_issue_20'], ' ms')} as before issue 20; "
          f"round trips saved {S.fmt(figures['round_trips_saved'], '', 1)}")
    S.write("db_round_trips", figures)


if __name__ == "__main__":
    main()
