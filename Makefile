# One entry point for the operator and for CI. `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install services test test-fast dev deploy dry-run sandbox sandbox-down bench clean

help:
	@echo "make deploy      provision the VPS and deploy (pyinfra inventory.py deploy.py)"
	@echo "make dry-run     show what a deploy would change, change nothing"
	@echo "make test        everything: unit, Redis/PostgreSQL integration, deploy to a booted Debian host"
	@echo "make test-fast   the same without the deploy test"
	@echo "make dev         web + worker locally: simulated scraper, emails to ./dev-outbox"
	@echo "make sandbox     deploy into a local throwaway Debian host (root needed)"
	@echo "make bench       benchmarks that print figures"

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

bench: install services
	$(BIN)/python bench/enqueue.py
	$(BIN)/python bench/idle_redis.py
	$(BIN)/python bench/health_load.py

clean:
	rm -rf $(VENV) build *.egg-info
