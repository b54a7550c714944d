"""`make sandbox`: the real deploy into a local throwaway Debian host, to see the bundle work without a VPS.

Builds a booted Debian 12 host on this machine (tests/testhost.py; with `site=True`, `make sandbox SITE=1`,
a Debian 13 host with the site fixture of tests/fixtures/site deployed beside the backend, as
tests/test_deploy_debian13.py deploys it: Debian 13's Node.js 20 runs Next.js 16, Debian 12 would
need NodeSource, which this machine cannot reach), starts the scraper and Resend
stand-ins and a forwarder to this machine's PostgreSQL, runs `pyinfra inventory.py deploy.py`
against it exactly as an operator would against a VPS, prints how to look at it, and keeps it
all running until Ctrl-C, then removes everything. Root needed.
"""

from __future__ import annotations

import signal
import sys
import time

from tests.deploystack import _APP_NAMES as _DEPLOY_NAMES
from tests.deploystack import DOMAIN, DeployStack
from tests.testhost import log


def main(name: str = "swsandbox", site: bool = False) -> int:
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    options = {"suite": "trixie", "site": True} if site else {}
    with DeployStack(name, database="seatwatch_sandbox", **options) as stack:
        log("deploying (pyinfra inventory.py deploy.py) ...")
        res = stack.deploy()
        print(res.tail(45))
        if res.returncode != 0:
            log(f"deploy failed after {res.seconds:.0f}s; tearing down")
            return 1
        log(f"deployed in {res.seconds:.0f}s")
        code, body = stack.wait_healthy()
        h = stack.host
        # the operator's environment of this sandbox (throwaway secrets), to rerun the deploy by hand
        envfile = h.workdir / "deploy.env"
        envfile.touch(mode=0o600)
        envfile.write_text("".join(f"export {k}='{v}'\n" for k, v in sorted(stack.env().items())
                                   if k.startswith("SEATWATCH_") or k in _DEPLOY_NAMES))
        print(f"""
Sandbox is up: a Debian {"13 host, the site beside the backend," if site else "12 host"} at {h.address}, deployed by this project's own pyinfra bundle.

  health through Caddy:  curl -k --resolve {DOMAIN}:443:{h.address} https://{DOMAIN}/api/monitoring/health
                         (HTTP {code})
  trigger a cron run:    curl -k --resolve {DOMAIN}:443:{h.address} -X POST \\
                              -H 'Authorization: Bearer {stack.cron_secret}' https://{DOMAIN}/api/cron
  a shell on the host:   python -m tests.testhost ssh {h.name}      (then: sudo -iu seatwatch pm2 ls)
  the same deploy again: . {envfile} && .venv/bin/pyinfra inventory.py deploy.py   (changes nothing)
  stand-ins:             scraper {stack.scraper.url}   Resend {stack.resend.url}
  database:              {stack.dsn}

Ctrl-C (or `make sandbox-down` from another shell) removes the host and everything it created.
""")
        sys.stdout.flush()
        try:
            while not stop and h.running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        log("tearing down the sandbox")
    return 0


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(main(*names[:1], site="--site" in sys.argv[1:]))
