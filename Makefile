# One entry point for the operator and for CI. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install services test test-fast dev dev-run deploy dry-run logs run releases rollback \
        deploy-lock cutover-check handover status audit env restart ssh lock sandbox sandbox-down bench bench-idle clean test-arm64 test-forky

help:
	@echo "make deploy      provision the VPS and deploy (pyinfra inventory.py deploy.py)"
	@echo "make dry-run     print the effective settings (secrets masked), show what a deploy would change"
	@echo "make status      one look: release, processes, health, capacity, heartbeats, last deploys (exit 1 unless healthy)"
	@echo "make logs        follow PM2's logs of web and worker; SINCE=10m|2h|ISO shows a window instead, LINES=N"
	@echo "make audit       the server's audit log (deploys, rollbacks, restarts); LINES=N"
	@echo "make env         the server's settings, secrets masked, each against the laptop's"
	@echo "make restart     restart web and worker (APP=site: the site), gated like a deploy"
	@echo "make ssh         a shell on the primary, as the ssh user"
	@echo "make run CMD=... a one-off 'python -m app CMD' in the current release, as the app user"
	@echo "make releases    the releases on the primary: current, gated, when, git commit"
	@echo "make rollback    back to the previous release (or RELEASE=<id>), gated like a deploy; SITE=1: the site's"
	@echo "make deploy-lock who holds the deploy lock (BREAK=1 removes it)"
	@echo "make cutover-check  verify the VPS end to end before and after the DNS switch"
	@echo "make handover    who runs the schedule; TO=vps takes it over from the old Workers, TO=old hands it back"
	@echo "make lock        regenerate requirements.lock and requirements-deploy.lock (pip-compile --generate-hashes)"
	@echo "make test        everything: unit, Redis/PostgreSQL integration, deploy to a booted Debian host"
	@echo "make test-fast   the same without the deploy test"
	@echo "make test-arm64  the Debian 13 deploy test on an emulated arm64 host (qemu; ~30 min, not in make test)"
	@echo "make test-forky  the fast suite under Debian testing's Python in a forky chroot (not in make test)"
	@echo "make dev         web + worker locally: simulated scraper, emails to ./dev-outbox"
	@echo "make dev-run CMD=status  a python -m app command against make dev, with its settings"
	@echo "make sandbox     deploy into a local throwaway Debian host (root needed; SITE=1: Debian 13 with the site fixture)"
	@echo "make bench       every benchmark; report in bench/results/README.md (BENCH_QUICK=1: smoke run)"
	@echo "make bench-idle  the idle consumer's Redis traffic, huey's defaults versus ours (6 min)"
	@echo "make install     the virtualenv .venv with this package and its test tools"
	@echo "make services    install and start local Redis, PostgreSQL and PgBouncer when not running"
	@echo "make sandbox-down  remove the local throwaway host of make sandbox"
	@echo "make clean       remove the virtualenv and build leftovers"

$(STAMP): pyproject.toml requirements-deploy.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-deploy.lock
	$(BIN)/pip install -q -e '.[deploy,test]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/services.sh

test: install services
	$(BIN)/pytest

test-fast: install services
	$(BIN)/pytest -m 'not deploy'

# The Debian 13 deploy test on an arm64 host under qemu-user emulation (about 8x slower: ~30 min).
test-arm64: install services
	SEATWATCH_TEST_ARCH=arm64 $(BIN)/pytest -m deploy tests/test_deploy_debian13.py

# The fast suite under Debian testing ("forky", Python 3.14) in a chroot, against this machine's Redis
# and PostgreSQL (a chroot shares the network); requirements.lock installed there with its hashes.
test-forky: install services
	$(BIN)/python -m tests.chroot_suite forky

# Its own Redis and PostgreSQL in ./.dev (nothing global changes); DEV_ARGS passes options, e.g. DEV_ARGS='--cycle 5'.
dev: install
	$(BIN)/python -m app dev $(DEV_ARGS)

# Any `python -m app` command against `make dev` (same settings), e.g. make dev-run CMD=status
dev-run: install
	$(BIN)/python -m app dev-run $(DEV_ARGS) $(CMD)

# Settings: deploy.env (checked in), secrets.env (ignored), the environment (wins). See docs/deploy.md.
deploy: install
	$(BIN)/python scripts/ops.py deploy $(if $(BREAK_LOCK),--break-lock)

dry-run: install
	$(BIN)/python -m roles.preflight
	$(BIN)/pyinfra --dry --diff inventory.py deploy.py

logs: install
	$(BIN)/python scripts/ops.py logs $(LINES) $(if $(SINCE),--since $(SINCE))

status: install
	$(BIN)/python scripts/ops.py status

audit: install
	$(BIN)/python scripts/ops.py audit $(LINES)

env: install
	$(BIN)/python scripts/ops.py env

restart: install
	$(BIN)/python scripts/ops.py restart $(if $(filter site,$(APP)),site)

ssh: install
	$(BIN)/python scripts/ops.py ssh

run: install
	$(BIN)/python scripts/ops.py run "$(CMD)"

releases: install
	$(BIN)/python scripts/ops.py releases

rollback: install
	$(BIN)/python scripts/ops.py rollback $(if $(SITE),--site) $(RELEASE)

deploy-lock: install
	$(BIN)/python scripts/ops.py lock $(if $(BREAK),break,status)

cutover-check: install
	$(BIN)/python scripts/ops.py cutover-check

# The schedule's owner (docs/runbook.md step 7): without TO, show it; TO=vps or TO=old record it.
handover: install
	$(BIN)/python scripts/ops.py run handover $(if $(TO),--to $(TO))

# redis-py needs async-timeout on Python < 3.11.3 (Debian 12 has 3.11.2): pinned for every host.
# requirements-deploy.lock is the laptop's toolchain (the app and the deploy extra: pyinfra,
# python-dotenv), hashed like the server's and held to the server's pins (-c requirements.lock).
# pip-compile keeps the hashes of every file of a pinned version; check_lock.py then fails the target
# unless each pin has a hashed file for CPython 3.11-3.14 on x86_64 and aarch64 (binary ones: a wheel).
lock: install
	$(BIN)/pip install -q pip-tools
	mkdir -p build && echo 'async-timeout>=4.0.3' > build/lock-extra.in
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-header --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml build/lock-extra.in
	$(BIN)/python scripts/check_lock.py requirements.lock
	printf 'async-timeout>=4.0.3\n-c ../requirements.lock\n' > build/lock-deploy.in
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-header --no-emit-index-url \
		--no-emit-find-links --extra deploy -o requirements-deploy.lock pyproject.toml build/lock-deploy.in

# A local throwaway Debian host (debootstrap + systemd-nspawn), deployed by this bundle; Ctrl-C removes it.
sandbox: install services
	$(BIN)/python -m tests.testhost sandbox $(if $(SITE),--site)

sandbox-down:
	$(BIN)/python -m tests.testhost down swsandbox

# The benchmarks, then bench/results/README.md with the figures, targets and plots (~15 min;
# BENCH_QUICK=1 for a smoke run of a few minutes, BENCH_FULL=1 for the issue's whole grid, ~1 h more).
bench: $(VENV)/.bench bench/bullmq/node_modules/.installed services
	$(BIN)/python bench/run_all.py

# The BullMQ comparator's npm packages (bench only: pinned by bench/bullmq/package-lock.json,
# installed into bench/bullmq/node_modules, which git ignores and no release ships).
bench/bullmq/node_modules/.installed: bench/bullmq/package.json bench/bullmq/package-lock.json
	cd bench/bullmq && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(VENV)/.bench

# Idle Redis traffic of the consumer, huey's defaults versus ours, at its full length (two 180 s runs).
bench-idle: install services
	$(BIN)/python bench/idle_redis.py

clean:
	rm -rf $(VENV) build *.egg-info
