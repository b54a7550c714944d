"""The activation, on the server: switch `current`, reload PM2, gate, roll back; and the releases listing.

Runs as root under systemd-run (roles/pm2.py activation_command: a dropped ssh connection cannot stop it
halfway) with the system's /usr/bin/python3 (3.10 on Ubuntu 22.04): standard library only, nothing of app/
or roles/ imported (tests/test_activation.py checks both). Uploaded root-owned to /usr/local/lib/seatwatch/;
the entry points `activate` (web and worker) and `site-activate` (the site) are one launcher
(roles/activate_entry.py) reading its JSON config beside it (activate.json, site-activate.json, root 0644,
written by roles/pm2.py activation_config): what the deploy knows arrives as data, not as code.

    activate RELEASE_DIR MARKER   MARKER ("RELEASE_DIR CONFIG_HASH") is written only when the gate passed:
                                  the deploy compares it with what it wants, so a rerun finishes the job
    activate releases             JSON: the marker and every complete release, newest first, with its flags

The gate (up to `timeout` s) wants the watched `process` online in PM2 with the same pid and restart count
for `stable_seconds`, the health URL (if any) answering one of `health_codes` (empty: any below 500), and,
with `heartbeat`, a heartbeat from that process naming the new release. On failure: back to the last gated
release (reload, gate again), exit 1 with the reason. Root trusts nothing the service user can write: its
code, log, marker, gated list and `current` link live in root's directories (checked at start, every path
component), files are opened without following links (O_NOFOLLOW; temporary ones O_EXCL), and the service's
code runs only through `runuser -u USER`. In the service user's releases it only looks, never writes.
"""

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINE_CHARS = 1000
# Every key a config must have (roles/pm2.py activation_config writes them; a missing one fails at start).
KEYS = ("user", "home", "root", "current", "bin", "ecosystem", "run", "marker", "gated", "log", "audit",
        "audit_name", "label", "failed", "timeout", "stable_seconds", "apps", "process", "heartbeat",
        "health_url", "health_host", "health_name", "health_codes")


def load_config(path):
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    missing = [k for k in KEYS if k not in config]
    if missing:
        raise ValueError("%s lacks %s" % (path, ", ".join(missing)))
    return config


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def printable(text):
    # PM2 log lines are the app's text: no terminal escapes or forged lines in root's log
    return "".join(c if c.isprintable() else "?" for c in text)


def one_line(text):
    """What root writes, as one bounded line of printable characters: its messages carry what the
    service user controls (PM2's jlist and stdout come from that user's daemon), and a newline, a
    carriage return or a terminal escape (OSC 52 writes the reader's clipboard) in them would forge
    lines in the activation log and the deploy's output."""
    text = printable(str(text))
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + "... (cut)"


def is_complete(release):
    """A release the service user finished unpacking: a real `.complete` in a real directory (lstat: no link)."""
    try:
        return stat.S_ISDIR(os.lstat(release).st_mode) and stat.S_ISREG(
            os.lstat(os.path.join(release, ".complete")).st_mode)
    except OSError:
        return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect (sign-in, https) is an answer of its own: counted, not followed


class Activation:
    def __init__(self, config):
        self.c = config
        self.releases = os.path.join(config["root"], "releases")
        self.log = None

    # ------------------------------------------------------------------ root's own files

    def untrusted(self, directory):
        """Why root may not write in `directory`, or None: every component from / a real directory of root's
        the service user cannot write (group-writable /var/log of Ubuntu: fine if not its group; sticky above: fine)."""
        user = self.c["user"]
        account = pwd.getpwnam(user)
        parts = [p for p in directory.split("/") if p]
        path = "/"
        for n, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except OSError as exc:
                return "%s: %s" % (path, exc.strerror)
            if not stat.S_ISDIR(st.st_mode):
                return "%s is not a directory" % path
            writable = st.st_mode & 0o002 or (
                st.st_mode & 0o020 and (st.st_gid == account.pw_gid or user in grp.getgrgid(st.st_gid).gr_mem))
            above_and_sticky = n < len(parts) - 1 and st.st_mode & stat.S_ISVTX
            if st.st_uid != 0 or (writable and not above_and_sticky):
                return "%s can be changed by others than root (owner uid %d, group %d, mode %o)" % (
                    path, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        return None

    def write_root_file(self, path, text, mode=0o644):
        """Replace `path` atomically: a fresh temporary file (O_EXCL: never an existing file or link), renamed."""
        tmp = path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def open_log(self):
        self.log = os.fdopen(os.open(self.c["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o600), "w")

    def say(self, msg):
        line = "%s %s" % (now_iso(), one_line(msg))
        print(line, flush=True)
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()

    def audit(self, release, result):
        fd = os.open(self.c["audit"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o640)
        with os.fdopen(fd, "a") as fh:
            fh.write("%s %s release=%s result=%s\n" % (now_iso(), self.c["audit_name"], os.path.basename(release),
                                                       result))

    def mark_gated(self, target):
        """`make rollback` goes back to gated releases only (`activate releases` flags them)."""
        os.close(os.open(os.path.join(self.c["gated"], os.path.basename(target)), os.O_WRONLY | os.O_CREAT | NOFOLLOW,
                         0o644))

    def switch(self, target):
        current = self.c["current"]
        tmp = current + ".new"  # in root's directory: a root-owned link, renamed over the old one
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, current)
        self.say("current -> %s" % target)

    # ------------------------------------------------------------------ the service user's PM2

    def as_user(self, *cmd, env=None, timeout=300):
        home = self.c["home"]
        base = ["runuser", "-u", self.c["user"], "--", "env", "HOME=" + home, "PM2_HOME=" + home + "/.pm2",
                "LC_ALL=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]
        base += ["%s=%s" % kv for kv in (env or {}).items()]
        return subprocess.run(base + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout)

    def pm2_procs(self):
        out = self.as_user("pm2", "jlist", timeout=60).stdout
        try:
            return {p["name"]: p for p in json.loads(out[out.index("["):])}
        except (ValueError, KeyError, TypeError):
            return {}

    def reload(self):
        subprocess.run(["systemctl", "start", "pm2-" + self.c["user"]], check=False)  # PM2 lives in its unit
        run = self.c["run"]
        # A process PM2 started from another wrapper (the layout before /usr/local/lib/seatwatch) is started
        # afresh: a reload keeps a process's script path.
        for name, proc in self.pm2_procs().items() if run else ():
            script = proc.get("pm2_env", {}).get("pm_exec_path")
            if name in self.c["apps"] and script and script != run:
                self.as_user("pm2", "delete", name)
                self.say("PM2's %s ran %s: deleted, started again from %s" % (name, script, run))
        for cmd in (["pm2", "startOrReload", self.c["ecosystem"], "--update-env"], ["pm2", "save", "--force"]):
            cp = self.as_user(*cmd)
            if cp.returncode != 0:
                self.say("%s failed: %s" % (" ".join(cmd), cp.stdout.strip()[-500:]))
                return False
        self.say("PM2 (user %s) reloaded %s and saved its process list" % (self.c["user"], ", ".join(self.c["apps"])))
        return True

    def beats(self, target):
        cp = self.as_user(self.c["run"], "heartbeat", env={"SEATWATCH_RELEASE_DIR": target}, timeout=60)
        try:
            return json.loads(cp.stdout[cp.stdout.index("{"):])["beats"]
        except (ValueError, KeyError, TypeError):
            return []

    def health(self):
        headers = {"Host": self.c["health_host"], "X-Forwarded-Proto": "https"} if self.c["health_host"] else {}
        request = urllib.request.Request(self.c["health_url"], headers=headers)
        try:
            with urllib.request.build_opener(_NoRedirects).open(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    # ------------------------------------------------------------------ the gate

    def gate(self, target):
        """None when `target` passes, else the reasons it did not within the timeout."""
        c, release_id = self.c, os.path.basename(target)
        name = c["process"]
        deadline = time.monotonic() + c["timeout"]
        seen, since, reasons, code = None, time.monotonic(), ["not checked"], None
        while time.monotonic() < deadline:
            reasons, now = [], time.monotonic()
            proc = self.pm2_procs().get(name)
            if proc is None:
                reasons.append("no %s in PM2's list" % name)
            else:
                env = proc.get("pm2_env", {})
                state = (proc.get("pid"), env.get("restart_time"), env.get("status"))
                if state != seen:
                    seen, since = state, now
                if env.get("status") != "online":
                    reasons.append("%s is %s (restarted %s times)" % (name, env.get("status"), env.get("restart_time")))
                elif now - since < c["stable_seconds"]:
                    reasons.append("%s pid %s not yet stable for %d s (restarted %s times)"
                                   % (name, proc.get("pid"), c["stable_seconds"], env.get("restart_time")))
                elif c["heartbeat"] and not any(b.get("release") == release_id and b.get("pid") == proc.get("pid")
                                                for b in self.beats(target)):
                    reasons.append("no heartbeat from release %s's %s (pid %s)" % (release_id, name, proc.get("pid")))
            if c["health_url"]:
                code = self.health()
                if not (code in c["health_codes"] if c["health_codes"] else 0 < code < 500):
                    reasons.append("%s answers HTTP %s" % (c["health_name"], code or "nothing"))
            if not reasons:
                self.say("gate passed for %s %s: %s%s pid %s online, stable%s" % (
                    c["label"], release_id, ("%s HTTP %s, " % (c["health_name"], code)) if c["health_url"] else "",
                    name, proc.get("pid"), ", heartbeat from this release" if c["heartbeat"] else ""))
                return None
            time.sleep(2)
        return "; ".join(reasons)

    def logs_tail(self):
        cp = self.as_user("pm2", "logs", "--nostream", "--lines", "15", timeout=60)
        for line in cp.stdout.strip().splitlines()[-40:]:
            self.say("  | " + printable(line))

    # ------------------------------------------------------------------ the commands

    def read_marker(self):
        try:
            with os.fdopen(os.open(self.c["marker"], os.O_RDONLY | NOFOLLOW)) as fh:
                return fh.read().strip()
        except OSError:
            return ""

    def activate(self, release, wanted):
        c, label = self.c, self.c["label"]
        places = (c["bin"], c["root"], c["gated"], os.path.dirname(c["marker"]), os.path.dirname(c["log"]),
                  os.path.dirname(c["audit"]))
        problems = [p for p in (self.untrusted(d) for d in places) if p]
        if problems:
            self.say("%s: refusing to run as root: %s" % (c["failed"], "; ".join(problems)))
            return 1
        self.open_log()
        config_hash = wanted.split()[-1]
        if os.path.dirname(release) != self.releases or os.path.basename(release) in ("", ".", ".."):
            self.say("%s: %s is not a release directory under %s" % (c["failed"], release, self.releases))
            return 1
        active = self.read_marker()
        current = c["current"]
        previous = active.split()[0] if active else (os.path.realpath(current) if os.path.islink(current) else "")
        if os.path.dirname(previous) != self.releases:
            previous = ""  # only a release directory is ever a place to go back to
        if not is_complete(release):
            self.say("%s: %s is not a complete %s" % (c["failed"], release, label))
            return 1
        self.say("activating %s %s (last gated: %s)" % (label, os.path.basename(release),
                                                       os.path.basename(previous) or "none"))
        if not (os.path.islink(current) and os.path.realpath(current) == os.path.realpath(release)):
            self.switch(release)
        failure = self.gate(release) if self.reload() else "PM2 could not reload"
        if failure is None:
            self.write_root_file(c["marker"], wanted + "\n")
            self.mark_gated(release)
            self.audit(release, "gated")
            self.say("%s %s is active" % (label, os.path.basename(release)))
            return 0
        self.say("%s: %s %s did not pass the gate within %d s: %s" % (
            c["failed"], label, os.path.basename(release), c["timeout"], failure))
        self.logs_tail()
        if not previous or os.path.realpath(previous) == os.path.realpath(release) or not is_complete(previous):
            self.say("no previous gated %s to roll back to" % label)
            self.audit(release, "failed")
            return 1
        self.switch(previous)
        failure = self.gate(previous) if self.reload() else "PM2 could not reload"
        if failure is None:
            self.write_root_file(c["marker"], "%s %s\n" % (previous, config_hash))
            self.audit(release, "failed, rolled back to %s" % os.path.basename(previous))
            self.say("ROLLED BACK to %s %s, which serves again" % (label, os.path.basename(previous)))
        else:
            self.audit(release, "failed, rollback to %s failed too" % os.path.basename(previous))
            self.say("ROLLBACK to %s %s failed its gate too: %s" % (label, os.path.basename(previous), failure))
        return 1

    def release_list(self):
        """{"active": marker, "dir", "releases": [{"release", "deployed", "flags"}, newest first]}: needs no root."""
        active = self.read_marker()
        try:
            current = os.readlink(self.c["current"])
        except OSError:
            current = ""
        try:
            names = os.listdir(self.releases)
        except OSError:
            names = []
        rows = []
        for name in names:
            path = os.path.join(self.releases, name)
            if not is_complete(path):
                continue
            flags = [f for f, on in (("current", path == current), ("active", path == active.split(" ")[0]))
                     if on]
            flags.append("gated" if os.path.isfile(os.path.join(self.c["gated"], name)) else "never-gated")
            deployed = os.lstat(os.path.join(path, ".complete")).st_mtime
            rows.append((os.lstat(path).st_mtime, name, deployed, flags))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)  # as `ls -t`: the newest directory first
        return {"active": active, "dir": self.releases, "releases": [
            {"release": name, "deployed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deployed)),
             "flags": ",".join(flags)} for _, name, deployed, flags in rows]}


def main(config_path, argv):
    """The entry points' body: `activate releases` or `activate RELEASE_DIR MARKER`, with the config beside them."""
    prog = os.path.basename(config_path).rsplit(".", 1)[0]
    try:
        act = Activation(load_config(config_path))
    except (OSError, ValueError) as exc:
        print("%s: cannot read its config: %s" % (prog, one_line(exc)), file=sys.stderr)
        return 2
    if argv == ["releases"]:
        print(json.dumps(act.release_list(), indent=1))
        return 0
    if len(argv) != 2:
        print("usage: %s RELEASE_DIR MARKER | %s releases" % (prog, prog), file=sys.stderr)
        return 2
    return act.activate(argv[0], argv[1])
