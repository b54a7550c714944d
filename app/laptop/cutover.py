"""`python -m app cutover-check --host IP --domain NAME`: is the VPS ready to take (or keep) the traffic?

Run from the laptop. Talks to the VPS at IP over HTTPS with the TLS name NAME (no DNS needed, so it
works before the switch, e.g. with a second name such as vps.example.com pointed at the VPS first),
and, when ssh options are given, asks PM2 on the VPS whether the worker runs. Each check prints
PASS/FAIL and a reason; the exit code is 0 only when all pass; the last line is the runbook's next step.

Checks: tls (a certificate valid for NAME, trusted by this machine or --ca-file), health (healthy),
database, redis, breaker (CLOSED), heartbeat (a consumer beat within --max-heartbeat-age), cron-auth
(/api/cron refuses a wrong token with 401), worker (over ssh: online in PM2, not restarting), dns
(informational: where NAME points now). Also noted: the Workers' cron triggers' schedule.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass

HEALTH = "/api/monitoring/health"
WORKERS_SCHEDULE = "0,30 * * * * (:00 even class numbers, :30 odd)"


@dataclass
class Result:
    name: str
    ok: bool
    detail: str


def _request(host: str, domain: str, path: str, method: str = "GET", headers: dict | None = None,
             timeout: float = 15) -> tuple[int, bytes]:
    """One HTTPS request to `host` for the name `domain` (SNI and Host), whatever DNS says, by urllib3
    (the scraper client's HTTP stack). The certificate is not judged here: check_tls does that, so
    these checks still say what the service answers while its certificate is not there yet."""
    import warnings

    import urllib3

    pool = urllib3.HTTPSConnectionPool(host, 443, server_hostname=domain, cert_reqs="CERT_NONE",
                                       assert_hostname=False, retries=False,
                                       timeout=urllib3.Timeout(connect=timeout, read=timeout))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        try:
            resp = pool.request(method, path, headers={"Host": domain, "User-Agent": "seatwatch-cutover-check",
                                                       **(headers or {})}, preload_content=True)
        finally:
            pool.close()
    return resp.status, resp.data


def check_tls(host: str, domain: str, ca_file: str | None) -> Result:
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        raw = socket.create_connection((host, 443), timeout=15)
        with ctx.wrap_socket(raw, server_hostname=domain) as sock:
            cert = sock.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        return Result("tls", False, f"certificate for {domain} not valid here: {exc.verify_message} "
                                    f"(Caddy has no publicly trusted certificate for this name yet: "
                                    f"is DNS for it pointing at {host}? see runbook step 4)")
    except (ssl.SSLError, OSError) as exc:
        return Result("tls", False, f"no TLS handshake with {host}:443 for {domain}: {exc}")
    issuer = dict(x[0] for x in cert.get("issuer", ()))
    return Result("tls", True, f"valid for {domain}, issued by {issuer.get('organizationName') or issuer.get('commonName')}, "
                               f"expires {cert.get('notAfter')}")


def check_http(host: str, domain: str, max_heartbeat_age: float) -> list[Result]:
    import urllib3

    out: list[Result] = []
    try:
        code, body = _request(host, domain, HEALTH)  # the tls check judges the certificate; these the service
        report = json.loads(body)
    except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
        return [Result("health", False, f"no health report from https://{domain}{HEALTH} at {host}: {exc}")]
    checks = report.get("checks", {})
    out.append(Result("health", report.get("status") == "healthy",
                      f"HTTP {code}, status {report.get('status')}"
                      + "".join(f"; {k}: {v.get('reason') or v.get('summary') or v.get('status')}"
                                for k, v in checks.items()
                                if isinstance(v, dict) and v.get("status") not in (None, "healthy"))))
    for name in ("database", "redis"):
        c = checks.get(name, {})
        out.append(Result(name, c.get("status") == "healthy", str(c.get("reason") or c.get("status") or "absent")))
    breaker = checks.get("circuit_breaker", {})
    out.append(Result("breaker", str(breaker.get("state")).upper() == "CLOSED", f"state {breaker.get('state')}"))
    owner = checks.get("schedule_owner", {})
    # Before the hand-over "waiting" passes (the old system runs the slots); a second scheduler
    # beside this one, or nothing checking sections at all, fails.
    out.append(Result("schedule", owner.get("status") == "healthy",
                      f"{owner.get('state')}: {owner.get('summary')}" if owner.get("summary")
                      else f"{owner.get('state') or 'absent'}"))
    sched = checks.get("scheduler", {})
    age = sched.get("age_seconds")
    out.append(Result("heartbeat", age is not None and age <= max_heartbeat_age,
                      f"last consumer beat {age} s ago from {sched.get('host')}" if age is not None
                      else str(sched.get("reason") or "no consumer heartbeat")))
    try:
        code, _ = _request(host, domain, "/api/cron", method="POST",
                           headers={"Authorization": "Bearer wrong-token-from-cutover-check"})
        out.append(Result("cron-auth", code == 401, f"a wrong token gets HTTP {code}"))
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        out.append(Result("cron-auth", False, f"/api/cron did not answer: {exc}"))
    return out


def check_worker(host: str, ssh: list[str], user: str) -> Result:
    remote = f"sudo -u {user} -H env PM2_HOME=/home/{user}/.pm2 pm2 jlist"
    try:
        cp = subprocess.run([*ssh, remote], capture_output=True, text=True, timeout=60)
        procs = {p["name"]: p for p in json.loads(cp.stdout[cp.stdout.index("["):])}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return Result("worker", False, f"could not ask PM2 on {host} over ssh: {exc}")
    worker = procs.get("worker")
    if worker is None:
        return Result("worker", False, "no worker process in PM2")
    env = worker.get("pm2_env", {})
    status = env.get("status")
    return Result("worker", status == "online",
                  f"PM2 says {status}, pid {worker.get('pid')}, restarted {env.get('restart_time')} times")


def check_dns(host: str, domain: str) -> tuple[bool, str]:
    try:
        addrs = sorted({a[4][0] for a in socket.getaddrinfo(domain, 443, proto=socket.IPPROTO_TCP)})
    except OSError as exc:
        return False, f"{domain} does not resolve here ({exc})"
    return host in addrs, f"{domain} -> {', '.join(addrs)}"


def run(host: str, domain: str, ca_file: str | None = None, ssh: list[str] | None = None,
        app_user: str = "seatwatch", max_heartbeat_age: float = 330, printer=print) -> int:
    results = [check_tls(host, domain, ca_file), *check_http(host, domain, max_heartbeat_age)]
    if ssh:
        results.append(check_worker(host, ssh, app_user))
    width = max(len(r.name) for r in results)
    for r in results:
        printer(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}")
    points_here, dns = check_dns(host, domain)
    printer(f"note  dns  {dns}")
    printer(f"note  the Cloudflare Workers' cron triggers ran {WORKERS_SCHEDULE}: after `make handover TO=vps` "
            "the schedule check fails while anything else checks sections (runbook step 7)")
    failed = [r.name for r in results if not r.ok]
    if failed:
        printer(f"FAILED: {', '.join(failed)}. Next: fix these and run cutover-check again (runbook step 4).")
        return 1
    if not points_here:
        printer(f"All checks pass. Next: runbook step 5 (switch {domain} to {host}).")
    else:
        printer(f"All checks pass and {domain} points here. Next: runbook step 7 (turn the Workers' cron off "
                "in the site's wrangler.jsonc, its deploy script, Workers Builds and the dashboard; then "
                "make handover TO=vps).")
    return 0
