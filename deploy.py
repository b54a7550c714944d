"""Entry point: `pyinfra inventory.py deploy.py`. Runs the roles in order; holds no operations itself.

Settings come from host data or the operator's environment (docs/deploy.md lists them);
roles/common.py reads them and fails early, naming every missing variable.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd())

from roles.app import app  # noqa: E402
from roles.common import DeployError, app_environment  # noqa: E402
from roles.base import base  # noqa: E402
from roles.caddy import caddy  # noqa: E402
from roles.firewall import firewall  # noqa: E402
from roles.node import node  # noqa: E402
from roles.pm2 import pm2  # noqa: E402
from roles.redis import redis  # noqa: E402
from roles.site import site, site_preflight  # noqa: E402

try:
    app_environment()  # fail before planning anything when a variable is missing or invalid
    site_preflight()  # with SEATWATCH_SITE_SOURCE: the site's build variables and secrets file, by name
except DeployError as exc:
    raise SystemExit(f"deploy stopped: {exc}") from None
try:
    base()  # first: refuses an unsupported distribution or architecture (roles/distro.py)
    firewall()
    redis()
    release = app()
    node()  # the archive's Node.js, or NodeSource's where the site needs a newer one (roles/distro.py)
    pm2(release)
    site()  # with SEATWATCH_SITE_SOURCE only: built on this laptop, gated before Caddy sends it traffic
    caddy()
except DeployError as exc:  # one line, no traceback: what is wrong with this host or setting
    raise SystemExit(f"deploy stopped: {exc}") from None
