"""Every supported distribution and architecture, at the level of pyinfra's facts (no host).

The whole deploy (deploy.py's roles, in order) is planned against each distribution's own
/etc/os-release and `uname -m` (tests/factplan.py), and the operations it yields are checked:
the packages, Caddy's repository or the archive's caddy, the venv's interpreter, the Redis the
config is rendered for, the PM2 version. The branches that cannot be booted here (Ubuntu's) run
here, so a typo in one fails a test. Debian 12 and 13 are also deployed for real (tests/test_deploy*.py).
"""

from __future__ import annotations

import ast

import pytest

from roles.common import DeployError
from tests.factplan import plan_deploy

# os-release fixture -> what the deploy must do there (README "Supported systems")
EXPECTED = {
    "debian-12": {"python": "python3", "redis": "7.0", "pm2": "7.0.4", "caddy_repo": False, "python3": (3, 11)},
    "debian-13": {"python": "python3", "redis": "8.0", "pm2": "7.0.4", "caddy_repo": False, "python3": (3, 13)},
    "ubuntu-22.04": {"python": "python3.11", "redis": "6.0", "pm2": "5.4.3", "caddy_repo": True,
                     "python3": (3, 10)},
    "ubuntu-24.04": {"python": "python3", "redis": "7.0", "pm2": "7.0.4", "caddy_repo": False, "python3": (3, 12)},
    "ubuntu-26.04": {"python": "python3", "redis": "8.0", "pm2": "7.0.4", "caddy_repo": False, "python3": (3, 14)},
}
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
CASES = [(d, a) for d in EXPECTED for a in ARCHES]


@pytest.fixture(scope="module")
def plans():
    return {(d, a): plan_deploy(d, a) for d, a in CASES}


@pytest.mark.parametrize("distro, arch", CASES)
def test_the_interpreter_and_its_packages(plans, distro, arch):
    plan, want = plans[distro, arch], EXPECTED[distro]
    venv = plan.commands("Create the release's virtualenv")
    assert venv and venv[0].startswith(f"{want['python']} -m venv "), venv
    assert {want["python"], f"{want['python']}-venv"} <= plan.apt_installs()
    if want["python"] != "python3":  # the archive's other interpreter: python3 itself is not what runs the app
        assert "python3.11" in plan.apt_installs() and "python3-venv" not in plan.apt_installs()


@pytest.mark.parametrize("distro, arch", CASES)
def test_redis_is_configured_for_the_archives_version(plans, distro, arch):
    plan, want = plans[distro, arch], EXPECTED[distro]
    assert "redis-server" in plan.apt_installs()
    assert plan.has(f"Configure Redis {want['redis']} ")
    conf = plan.stdin("Configure Redis")
    assert f"Rendered for Redis {want['redis']}" in conf
    bind = next(line for line in conf.splitlines() if line.startswith("bind "))
    assert bind == ("bind 127.0.0.1" if want["redis"] == "6.0" else "bind 127.0.0.1 -::1"), bind


@pytest.mark.parametrize("distro, arch", CASES)
def test_node_and_the_pm2_that_runs_on_it(plans, distro, arch):
    plan, want = plans[distro, arch], EXPECTED[distro]
    assert {"nodejs", "npm"} <= plan.apt_installs()
    assert plan.commands("Install PM2") == [f"npm install -g pm2@{want['pm2']}"]


@pytest.mark.parametrize("distro, arch", CASES)
def test_caddy_from_the_archive_or_from_caddys_repository(plans, distro, arch):
    plan, want = plans[distro, arch], EXPECTED[distro]
    assert "caddy" in plan.apt_installs()
    repo = plan.commands("Caddy's apt repository")
    if want["caddy_repo"]:
        assert plan.has("Caddy's apt signing key")
        assert any(f"deb [arch={ARCHES[arch]} signed-by=/etc/apt/keyrings/caddy-stable.asc] " in c for c in repo), repo
        names = plan.names()  # the repository's lists are fetched before caddy is installed
        refresh = next(i for i, n in enumerate(names) if "Refresh the package lists for Caddy" in n)
        assert refresh < next(i for i, n in enumerate(names) if n.endswith("Install Caddy"))
    else:
        assert not repo and not plan.has("Caddy's apt signing key")


@pytest.mark.parametrize("distro", EXPECTED)
def test_the_activation_script_parses_under_the_systems_python3(distro):
    """bin/activate runs under /usr/bin/python3 (3.10 on Ubuntu 22.04), not the release's venv."""
    plan = plan_deploy(distro)
    from roles.common import PROJECT

    for name in ("activation.py", "activate_entry.py"):  # what roles/pm2.py uploads (tests/test_activation.py)
        ast.parse((PROJECT / "roles" / name).read_text(), feature_version=EXPECTED[distro]["python3"])
    assert plan.commands("Activate release")[0].count("/usr/bin/python3 ") == 1


def test_an_installed_redis_wins_over_the_table():
    """A host that has redis-server already: its own version (dpkg), e.g. Debian 13's 8.0 point release."""
    plan = plan_deploy("debian-13", commands={"dpkg-query -W -f='${Version}' redis-server": "5:8.0.2-3+deb13u1"})
    assert plan.has("Configure Redis 8.0 ")
    plan = plan_deploy("debian-12", commands={"dpkg-query -W -f='${Version}' redis-server": "5:7.2.4-1~bpo12+1"})
    assert plan.has("Configure Redis 7.2 ")


@pytest.mark.parametrize("os_release, found", [
    ("debian-11", "Debian GNU/Linux 11 (bullseye)"),
    ("debian-forky", "Debian GNU/Linux forky/sid"),
    ("ubuntu-20.04", "Ubuntu 20.04.6 LTS"),
    ("fedora-41", "Fedora Linux 41 (Server Edition)"),
])
def test_an_unsupported_distribution_is_refused_in_one_line(os_release, found):
    with pytest.raises(DeployError) as exc:
        plan_deploy(os_release)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 200, message
    assert message.startswith(f"unsupported OS {found}: ")
    for name in ("Debian 12", "Debian 13", "Ubuntu 22.04", "Ubuntu 24.04", "Ubuntu 26.04"):
        assert name in message


@pytest.mark.parametrize("arch", ["armv7l", "riscv64", "i686"])
def test_an_unsupported_architecture_is_refused_in_one_line(arch):
    with pytest.raises(DeployError) as exc:
        plan_deploy("debian-13", arch)
    assert str(exc.value) == f"unsupported architecture {arch}: x86_64 or aarch64 (arm64) wanted"


@pytest.mark.parametrize("distro", ["debian-13", "ubuntu-26.04"])
def test_valkey_instead_of_redis_where_the_archive_has_it(distro):
    plan = plan_deploy(distro, "aarch64", env={"SEATWATCH_REDIS_PACKAGE": "valkey"})
    assert "valkey-server" in plan.apt_installs() and "redis-server" not in plan.apt_installs()
    assert plan.has("Configure Valkey 8.1 ")
    write = plan.commands("Configure Valkey")[0]
    assert "/etc/valkey/valkey.conf.new" in write and "chown valkey:valkey" in write
    conf = plan.stdin("Configure Valkey")
    assert "dir /var/lib/valkey\n" in conf and "pidfile /run/valkey/valkey-server.pid\n" in conf
    assert "bind 127.0.0.1 -::1\n" in conf
    assert plan.commands("Run Valkey now and at boot") == ["systemctl start valkey-server.service",
                                                           "systemctl enable valkey-server.service"]


@pytest.mark.parametrize("distro", ["debian-12", "ubuntu-22.04", "ubuntu-24.04"])
def test_valkey_is_refused_where_the_archive_has_none(distro):
    with pytest.raises(DeployError) as exc:
        plan_deploy(distro, env={"SEATWATCH_REDIS_PACKAGE": "valkey"})
    assert str(exc.value).startswith("SEATWATCH_REDIS_PACKAGE=valkey: ") and "\n" not in str(exc.value)


def test_an_unknown_redis_package_names_the_variable():
    with pytest.raises(DeployError, match="^SEATWATCH_REDIS_PACKAGE must be redis or valkey$"):
        plan_deploy("debian-13", env={"SEATWATCH_REDIS_PACKAGE": "keydb"})
