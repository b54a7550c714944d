"""The operator's one look at the server, from the laptop: `make status`, `audit`, `env`, `restart`,
`ssh`, and `logs SINCE=... LINES=...` (scripts/ops.py dispatches here; the ssh plumbing is ops.py's).

Everything printed that the app user can write (PM2's process list, log lines) passes through
`printable` first: it reaches the operator's terminal, so no escape sequence or forged line gets there.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone

import ops

SECTION = "=== seatwatch-status "  # a marker the remote script prints between its parts
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, limit: int = 500) -> str:
    return _CONTROL.sub("?", text)[:limit]


def _pm2(user: str, home: str) -> str:
    return f"sudo -u {user} -H env PM2_HOME={home} pm2 jlist 2>/dev/null"


def status_script() -> str:
    site = ops.site_settings()["user"]
    parts = {
        "release": f"basename $(readlink {ops.ROOT}/current) 2>/dev/null; cat {ops.MARKER} 2>/dev/null",
        "pm2": _pm2(ops.USER, f"/home/{ops.USER}/.pm2"),
        "pm2-site": f"[ -d /var/lib/{site}/.pm2 ] && {_pm2(site, f'/var/lib/{site}/.pm2')}",
        "status": f"sudo -u {ops.USER} -H {ops.BIN}/run status; echo \"exit=$?\"",
        "heartbeat": f"sudo -u {ops.USER} -H {ops.BIN}/run heartbeat",
        "deploys": f"sudo tail -n 5 {ops.AUDIT} 2>/dev/null",
    }
    # a newline before each marker: `pm2 jlist` ends its JSON without one
    return "; ".join(f"echo; echo '{SECTION}{name}'; {{ {cmd}; }}" for name, cmd in parts.items())


def split_sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            name = line[len(SECTION):].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def process_rows(jlist: str, now_ms: float) -> list[str]:
    """One line per PM2 process: name, state, uptime, restarts, memory (from `pm2 jlist`)."""
    start = (jlist or "").find("[")  # PM2 may print notices before its JSON, and text after it
    try:
        if start < 0 and (jlist or "").strip():
            raise ValueError("no list")
        procs = json.JSONDecoder().raw_decode(jlist[start:])[0] if start >= 0 else []
    except ValueError:
        return ["  (PM2's process list could not be read)"]
    rows = []
    for p in procs if isinstance(procs, list) else []:
        env = p.get("pm2_env") or {}
        up = max(0, (now_ms - float(env.get("pm_uptime") or now_ms)) / 1000)
        memory = (p.get("monit") or {}).get("memory") or 0
        rows.append(f"  {printable(str(p.get('name')), 20):<12} {printable(str(env.get('status')), 20):<10} "
                    f"up {timedelta(seconds=int(up))!s:<16} restarts {int(env.get('restart_time') or 0):<4} "
                    f"{memory / 1e6:6.1f} MB")
    return rows or ["  (none)"]


def cmd_status(args) -> int:
    """Release, processes, the service's own status, heartbeats, the last deploys; exit 1 unless healthy."""
    out = ops.ssh(status_script(), check=False).stdout
    parts = split_sections(out)
    release = (parts.get("release") or "").split()
    print(f"release  {printable(release[0]) if release else '(none)'}"
          + ("  (gated)" if len(release) > 1 and release[1].endswith(release[0]) else ""))
    now_ms = time.time() * 1000
    print("processes (backend's PM2)")
    print("\n".join(process_rows(parts.get("pm2", ""), now_ms)))
    if parts.get("pm2-site", "").strip():
        print("processes (the site's PM2)")
        print("\n".join(process_rows(parts["pm2-site"], now_ms)))
    body = parts.get("status", "")
    code = re.search(r"^exit=(\d+)$", body, re.M)
    print("\n" + printable(re.sub(r"^exit=\d+\n?", "", body, flags=re.M), 20000).rstrip())
    print("\nheartbeats\n" + printable(parts.get("heartbeat", ""), 5000).rstrip())
    print("\nlast deploys\n" + printable(parts.get("deploys", "") or "(none)\n", 5000).rstrip())
    return 0 if code and code.group(1) == "0" else 1


def cmd_audit(args) -> int:
    lines = args.lines
    print(ops.ssh(f"sudo tail -n {lines} {ops.AUDIT} 2>/dev/null || true").stdout.rstrip() or "(no audit log yet)")
    return 0


def env_rows(server: dict[str, str], laptop: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, shown value, source) of each server setting: secrets masked; whether the laptop's agrees."""
    from roles.config import mask

    rows = []
    for name, value in sorted(server.items()):
        local = laptop.get(name, "").strip()
        source = ("server only (set by the deploy)" if not local else
                  "same as the laptop" if local == value else "differs from the laptop: make deploy applies it")
        rows.append((name, mask(name, value) or "-", source))
    return rows


def cmd_env(args) -> int:
    """The server's env file (secrets masked), each with its source."""
    import os

    from roles.config import parse_env_text

    server = parse_env_text(ops.ssh("sudo cat /etc/seatwatch/app.env").stdout)
    rows = env_rows(server, dict(os.environ))
    width = max((len(n) for n, _, _ in rows), default=0)
    for name, shown, source in rows:
        print(f"  {name:<{width}}  {shown:<40}  [{source}]")
    return 0


def cmd_restart(args) -> int:
    """Web and worker (or APP=site: the site) restarted through the activation, gated like a deploy."""
    place = ops.SITE_PLACE if args.app == "site" else ops.APP
    current = ops.current_of(ops.list_releases(place))
    if current is None:
        raise SystemExit("nothing to restart: no current release on the server")
    return ops.rollback(place, current, kind="restart")


def cmd_ssh(args) -> int:
    return subprocess.run(ops.ssh_cmd("", tty=True)[:-1]).returncode  # no command: a login shell


def since_cutoff(text: str, now: datetime | None = None) -> datetime:
    """'10m', '2h', '1d' or an ISO time (UTC) -> the moment from which log lines are shown."""
    now = now or datetime.now(timezone.utc)
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        return now - timedelta(seconds=int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit("SINCE must be like 10m, 2h, 1d or 2026-12-06T14:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")  # PM2's `time: true` prefix (the server is UTC)


def lines_since(text: str, cutoff: datetime) -> list[str]:
    """The log lines stamped at or after `cutoff`, in time order across the files; a line without a
    stamp (a traceback's) stays with the stamped line before it."""
    records: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _STAMP.match(line.split("|", 1)[-1].strip())
        if m:
            when = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc)
            records.append((m.group(1), [printable(line, 2000)]) if when >= cutoff else ("", []))
        elif records and records[-1][1]:
            records[-1][1].append(printable(line, 2000))
    return [line for _, lines in sorted((r for r in records if r[1]), key=lambda r: r[0]) for line in lines]


def logs_since(since: str, lines: int) -> int:
    """The logs of web, worker (and the site) since a moment, not followed."""
    cutoff = since_cutoff(since)
    site = ops.site_settings()["user"]
    files = f"/home/{ops.USER}/.pm2/logs/*.log /var/lib/{site}/.pm2/logs/*.log"
    remote = f"for f in {files}; do [ -f \"$f\" ] && sudo tail -n 50000 \"$f\" | sed \"s|^|$(basename $f .log) \\| |\"; done"
    shown = lines_since(ops.ssh(remote, check=False).stdout, cutoff)
    print("\n".join(shown[-lines:]) if shown else f"no log lines since {cutoff.isoformat(timespec='seconds')}")
    return 0
