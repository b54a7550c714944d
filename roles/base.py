"""base: packages, a UTF-8 locale, the timezone, a swap file on small hosts, the app user, security upgrades."""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd

from roles.common import TEMPLATES, app_paths, cfg, python_for_host
from roles.distro import host_deb_arch, host_distro

PACKAGES = [
    "ca-certificates", "curl", "locales", "logrotate", "tzdata",
    "unattended-upgrades", "sudo",
]


@deploy("Base system")
def base() -> None:
    host_distro()  # refuses an unsupported distribution (roles/distro.py: the supported table), one line
    host_deb_arch()  # and an architecture other than x86_64 or aarch64

    # A swap file before anything big is installed: 1 GB hosts run out of memory in apt and pip.
    swap_mb = cfg("base_swap_mb")
    if str(swap_mb) == "auto":
        meminfo_kb = host.get_fact(Command, command="awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        memory_mb = int(meminfo_kb or 0) // 1024
        swap_mb = 1024 if 0 < memory_mb < 2048 else 0
    swap_mb = int(swap_mb)
    if swap_mb > 0:
        if not host.get_fact(File, path="/swapfile"):
            server.shell(
                name=f"Create a {swap_mb} MB swap file",
                commands=[
                    f"fallocate -l {swap_mb}M /swapfile || dd if=/dev/zero of=/swapfile bs=1M count={swap_mb}",
                    "chmod 0600 /swapfile",
                    "mkswap /swapfile",
                    "swapon /swapfile",
                ],
            )
        files.line(name="Enable the swap file at boot", path="/etc/fstab",
                   line="/swapfile none swap sw 0 0")
        files.put(name="Prefer RAM over swap", src=StringIO("# managed by pyinfra\nvm.swappiness = 10\n"),
                  dest="/etc/sysctl.d/60-seatwatch-swap.conf")

    # cache_time: a rerun within a day does not refresh (unattended-upgrades refreshes daily anyway)
    apt.update(name="Refresh the package lists", cache_time=86400)
    apt.packages(name="Install the base packages", packages=PACKAGES + python_for_host()[1],
                 no_recommends=True)

    locale = cfg("base_locale")
    if locale != "C.UTF-8":  # C.UTF-8 is built in; others are generated
        gen = files.line(name=f"Enable the {locale} locale", path="/etc/locale.gen",
                         line=f"{locale} UTF-8", replace=f"{locale} UTF-8")
        server.shell(name="Generate locales", commands=["locale-gen"], _if=gen.did_change)
    files.line(name=f"Make {locale} the system locale", path="/etc/default/locale",
               line="^LANG=.*", replace=f"LANG={locale}")

    tz = cfg("base_timezone")
    files.link(name=f"Set the timezone to {tz}", path="/etc/localtime", target=f"/usr/share/zoneinfo/{tz}",
               force=True, force_backup=False)
    files.put(name="Record the timezone", src=StringIO(f"{tz}\n"), dest="/etc/timezone", mode="644")

    user = cfg("app_user")
    server.user(name=f"Create the unprivileged app user {user}", user=user, system=True,
                home=app_paths()["home"], shell="/bin/bash", create_home=True)

    files.template(name="Enable unattended security upgrades",
                   src=str(TEMPLATES / "20auto-upgrades.j2"), dest="/etc/apt/apt.conf.d/20auto-upgrades",
                   mode="644")
    systemd.service(name="Run the unattended-upgrades service", service="unattended-upgrades",
                    running=True, enabled=True)
