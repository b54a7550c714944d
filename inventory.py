"""Hosts and groups, from deploy.env and the operator's environment. No secrets here: keys and tokens stay
on the laptop.

    SEATWATCH_HOST=203.0.113.10 SEATWATCH_SSH_USER=ubuntu SEATWATCH_SSH_KEY=~/.ssh/oracle \
        pyinfra inventory.py deploy.py

primary  exactly one host: web (waitress behind Caddy), the worker with the periodic scheduler,
         and (unless REDIS_URL points elsewhere) the Redis everything uses.
workers  optional extra hosts (SEATWATCH_WORKERS=ip1,ip2): consumers only (`huey_consumer -n`),
         no web, no Caddy, no Redis; they need a REDIS_URL that they can reach (a managed Redis,
         or the primary's Redis bound to a private address with SEATWATCH_REDIS_BIND). An entry
         `ssh-address=private-address` names the address a worker reaches that Redis from (the
         primary's firewall accepts the Redis port from it only; roles/firewall.py).

SEATWATCH_SSH_USER, _KEY, _PORT and _KNOWN_HOSTS apply to every host.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd())

from roles.config import load_settings_files  # noqa: E402

load_settings_files()  # deploy.env (checked in), secrets.env (ignored); the environment wins


def _ssh_data() -> dict:
    data = {
        "ssh_user": os.environ.get("SEATWATCH_SSH_USER", "ubuntu"),
        "ssh_port": int(os.environ.get("SEATWATCH_SSH_PORT", "22")),
        # the login user is unprivileged: every operation runs through sudo
        "_sudo": True,
    }
    key = os.environ.get("SEATWATCH_SSH_KEY")
    if key:
        data["ssh_key"] = os.path.expanduser(key)
    known_hosts = os.environ.get("SEATWATCH_SSH_KNOWN_HOSTS")
    if known_hosts:
        data["ssh_known_hosts_file"] = os.path.expanduser(known_hosts)
        data["ssh_strict_host_key_checking"] = "yes"
    return data


_primary = os.environ.get("SEATWATCH_HOST", "").strip()
if not _primary:
    raise SystemExit("inventory.py: set SEATWATCH_HOST to the VPS address (see docs/deploy.md)")

primary = [(_primary, {**_ssh_data(), "seatwatch_role": "primary"})]
def _worker(entry: str) -> tuple[str, dict]:
    """`ssh-address` or `ssh-address=private-address` (the address it reaches the primary's Redis from)."""
    address, _, private = (part.strip() for part in entry.partition("="))
    data = {**_ssh_data(), "seatwatch_role": "worker"}
    if private:
        data["private_address"] = private
    return address, data


workers = [
    _worker(h)
    for h in os.environ.get("SEATWATCH_WORKERS", "").split(",")
    if h.strip() and h.partition("=")[0].strip() != _primary
]
