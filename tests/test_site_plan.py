"""The site's deploy at the level of pyinfra's facts (tests/factplan.py): per distribution and architecture.

With SEATWATCH_SITE_SOURCE set, every supported system gets a Node.js the site runs on (20.9+): the archive's
on Debian 13 and Ubuntu 26.04, NodeSource's signed repository (its key checked against the pinned fingerprint,
the host's architecture in the source line) elsewhere, and the PM2 that runs on it. Without the setting the
plan is what it was. The build these plans ship is a real cached artifact of the build directory (the same
file name the laptop's build makes), so nothing is built here: tests/test_site_build.py builds for real.
"""

from __future__ import annotations

import subprocess

import pytest

from roles import sitebuild
from roles.distro import NODESOURCE_KEY_FINGERPRINT, NODESOURCE_MAJOR, PM2_CURRENT
from tests.factplan import plan_deploy
from tests.test_deploy_config import GOOD_ENV, plan as dry_run
from tests.test_site_build import GOOD_VARS

ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
FROM_ARCHIVE = {"debian-13", "ubuntu-26.04"}
DISTROS = ["debian-12", "debian-13", "ubuntu-22.04", "ubuntu-24.04", "ubuntu-26.04"]


@pytest.fixture(scope="module")
def site_env(tmp_path_factory):
    """A site checkout (one commit) and a build directory holding its build for both architectures."""
    src = tmp_path_factory.mktemp("site")
    (src / "package-lock.json").write_text("{}")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "site"], check=True)
    out = tmp_path_factory.mktemp("builds")
    commit = sitebuild.source_commit(src)
    for deb_arch in ARCHES.values():
        key = sitebuild.build_key(commit, dict(GOOD_VARS, NEXT_PUBLIC_SITE_URL=GOOD_ENV["NEXT_PUBLIC_SITE_URL"]),
                                  deb_arch)
        (out / f"site-{key}.tar.gz").write_bytes(b"")
    return {**GOOD_VARS, "NEXT_PUBLIC_SITE_URL": GOOD_ENV["NEXT_PUBLIC_SITE_URL"],
            "SEATWATCH_SITE_SOURCE": str(src), "SEATWATCH_SITE_BUILD_DIR": str(out)}


@pytest.fixture(scope="module")
def plans(site_env):
    sitebuild.site_artifact.cache_clear()
    try:
        yield {(d, a): plan_deploy(d, a, env=site_env) for d in DISTROS for a in ARCHES}
    finally:
        sitebuild.site_artifact.cache_clear()


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("distro", DISTROS)
def test_the_node_source_per_distribution_and_architecture(plans, distro, arch):
    plan = plans[distro, arch]
    repo = plan.commands("NodeSource's apt repository")
    if distro in FROM_ARCHIVE:
        assert {"nodejs", "npm"} <= plan.apt_installs()
        assert not repo and not plan.has("NodeSource")
    else:
        line = (f"deb [arch={ARCHES[arch]} signed-by=/etc/apt/keyrings/nodesource.asc] "
                f"https://deb.nodesource.com/node_{NODESOURCE_MAJOR}.x nodistro main")
        assert any(line in c for c in repo), repo
        key = " ".join(plan.commands("NodeSource's apt signing key"))
        assert NODESOURCE_KEY_FINGERPRINT in key and "gpg --show-keys" in key and "exit 1" in key
        names = plan.names()
        order = [next(i for i, n in enumerate(names) if part in n) for part in
                 ("NodeSource's apt signing key", "NodeSource's apt repository", "Install Node.js 22 from NodeSource",
                  "Install PM2")]
        assert order == sorted(order), "key, repository, nodejs, then PM2 on it"
        assert "nodejs npm-" in " ".join(plan.commands("Install Node.js 22 from NodeSource"))
        assert "npm" not in plan.apt_installs(), "NodeSource's nodejs carries npm"
    assert plan.commands("Install PM2") == [f"npm install -g pm2@{PM2_CURRENT}"]


@pytest.mark.parametrize("arch", ARCHES)
def test_the_site_ships_the_build_for_the_hosts_architecture(plans, site_env, arch):
    plan = plans["debian-13", arch]
    upload = [n for n in plan.names() if "Upload the site build" in n]
    assert len(upload) == 1
    key = upload[0].split("Upload the site build ")[1].split()[0]
    commit = sitebuild.source_commit(__import__("pathlib").Path(site_env["SEATWATCH_SITE_SOURCE"]))
    assert key == sitebuild.build_key(commit, {k: site_env[k] for k in sitebuild.BUILD_VARS}, ARCHES[arch])
    names = plan.names()
    for part in ("Create the site's system user seatwatch-site", "Write the site's env file",
                 "Install the pm2-seatwatch-site boot unit", f"Activate site release {key}"):
        assert any(part in n for n in names), part
    activate = next(i for i, n in enumerate(names) if "Activate site release" in n)
    assert activate < next(i for i, n in enumerate(names) if "Install Caddy" in n), "gated before Caddy points at it"
    assert "systemd-run" in plan.commands("Activate site release")[0]


def test_without_the_setting_nothing_of_the_site_is_planned():
    plan = plan_deploy("debian-12", "x86_64")
    assert not [n for n in plan.names() if "site" in n.lower() or "NodeSource" in n]
    assert {"nodejs", "npm"} <= plan.apt_installs()


def test_a_placeholder_stops_the_deploy_before_any_host_is_touched(site_env):
    env = {**GOOD_ENV, **site_env, "NEXT_PUBLIC_SUPABASE_ANON_KEY": "your-anon-key"}
    cp = dry_run(env)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0
    assert "deploy stopped" in out and "NEXT_PUBLIC_SUPABASE_ANON_KEY is a placeholder" in out
    assert "your-anon-key" not in out
    assert "Gathering facts" not in out and "Starting operation" not in out


def test_the_site_source_and_an_outside_upstream_exclude_each_other(site_env):
    cp = dry_run({**GOOD_ENV, **site_env, "SEATWATCH_SITE_UPSTREAM": "https://site.example"})
    assert cp.returncode != 0
    assert "SEATWATCH_SITE_SOURCE and SEATWATCH_SITE_UPSTREAM are both set" in cp.stdout + cp.stderr


def test_the_site_activation_is_the_apps_with_its_own_config(plans):
    """site-activate is the same entry point and module as activate (roles/activation.py, stdlib only: see
    tests/test_activation.py); what differs is its config, uploaded beside it."""
    plan = plans["debian-13", "x86_64"]
    for name in ("activate", "site-activate"):
        assert plan.has(f"Install the activation entry point /usr/local/lib/seatwatch/{name} (")
        assert plan.has(f"Install the activation config /usr/local/lib/seatwatch/{name}.json (")
    assert len([n for n in plan.names() if "Install the activation module" in n]) == 1
    assert plan.commands("Activate site release")[0].count("/usr/local/lib/seatwatch/site-activate ") == 1


def test_the_laptop_preflight_knows_the_sites_settings_and_names_a_bad_one():
    """`make deploy` / `make dry-run` check the settings before any ssh (roles/preflight.py): the site's public
    build variables are known names, and a placeholder among them is a problem named by variable only."""
    from roles import preflight

    env = {**GOOD_ENV, "SEATWATCH_HOST": "203.0.113.10", "SEATWATCH_SITE_SOURCE": "/src/site", **GOOD_VARS}
    sources = {n: "deploy.env" for n in ("SEATWATCH_SITE_SOURCE", *sitebuild.BUILD_VARS)}
    assert preflight.problems(env, sources) == []
    bad = preflight.problems({**env, "NEXT_PUBLIC_SUPABASE_URL": "https://placeholder.supabase.co"}, sources)
    assert len(bad) == 1 and "NEXT_PUBLIC_SUPABASE_URL is a placeholder" in bad[0] and "placeholder.supabase" not in bad[0]
    assert preflight.problems({k: v for k, v in env.items() if k != "SEATWATCH_SITE_SOURCE"}, sources) == []
