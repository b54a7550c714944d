# One entry point for the operator and for CI. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install services test test-fast dev deploy dry-run sandbox sandbox-down bench bench-idle clean

help:
	@echo "make deploy      provision the VPS and deploy (pyinfra inventory.py deploy.py)"
	@echo "make dry-run     show what a deploy would change, change nothing"
	@echo "make test        everything: unit, Redis/PostgreSQL integration, deploy to a booted Debian host"
	@echo "make test-fast   the same without the deploy test"
	@echo "make dev         web + worker locally: simulated scraper, emails to ./dev-outbox"
	@echo "make sandbox     deploy into a local throwaway Debian host (root needed)"
	@echo "make bench       every benchmark; report in bench/results/README.md (BENCH_QUICK=1: smoke run)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/services.sh

test: install services
	$(BIN)/pytest

test-fast: install services
	$(BIN)/pytest -m 'not deploy'

# Local Redis/PostgreSQL as `make test` uses them; DEV_ARGS passes options, e.g. DEV_ARGS='--cycle 5'.
dev: install services
	$(BIN)/python -m app dev $(DEV_ARGS)

deploy: install
	$(BIN)/pyinfra -y inventory.py deploy.py

dry-run: install
	$(BIN)/pyinfra --dry inventory.py deploy.py

# A local throwaway Debian host (debootstrap + systemd-nspawn), deployed by this bundle; Ctrl-C removes it.
sandbox: install services
	$(BIN)/python -m tests.testhost sandbox

sandbox-down:
	$(BIN)/python -m tests.testhost down swsandbox

# The benchmarks, then bench/results/README.md with the figures, targets and plots (~15 min;
# BENCH_QUICK=1 for a smoke run of a few minutes, BENCH_FULL=1 for the issue's whole grid, ~1 h more).
bench: $(VENV)/.bench services
	$(BIN)/python bench/run_all.py

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(VENV)/.bench

# Idle Redis traffic of the consumer, huey's defaults versus ours, at its full length (two 180 s runs).
bench-idle: install services
	$(BIN)/python bench/idle_redis.py

clean:
	rm -rf $(VENV) build *.egg-info
