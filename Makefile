# The two commands: `make up` (set up, then a distributor and five nodes in the foreground)
# and `make test`. Every target is phony: tests/ and bench/ are folders.
.PHONY: help setup up down test test-e2e chaos fuzz bench lint format

VENV_PY := .venv/bin/python
NODES ?= 5
PYTEST_ARGS ?=
CHAOS_SECONDS ?= 180
FUZZ_ARGS ?= --frames 1000000
BENCH_ARGS ?=

help:
	@echo "make setup   install what is missing (compose v2, base image, wheelhouse, .venv, .env), build the image"
	@echo "make up      setup, then docker compose up --build --scale node=$(NODES) (Ctrl-C stops it)"
	@echo "make down    remove the containers and network of make up"
	@echo "make test    setup, then pytest: unit, integration and e2e (PYTEST_ARGS=... to pass more)"
	@echo "make chaos   setup, then the chaos test for CHAOS_SECONDS=$(CHAOS_SECONDS) s (make test runs it at 180)"
	@echo "make fuzz    hostile frames at a live cluster on loopback (FUZZ_ARGS=\"$(FUZZ_ARGS)\")"
	@echo "make bench   benchmarks: tables on stdout, bench/results/<UTC time>.json and .png (under 10 min)"
	@echo "make lint    ruff check and ruff format --check"

setup:
	bash scripts/setup.sh

# Compose 2.26.1 (trixie's) can panic on Ctrl-C while it stops the containers
# (docker/compose#11710), so they are stopped once more after it returns, however it ends.
up: setup
	docker compose up --build --scale node=$(NODES); status=$$?; \
	docker compose stop >/dev/null 2>&1; exit $$status

down:
	docker compose down --volumes --remove-orphans

test: setup
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

test-e2e: setup
	$(VENV_PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Random faults on a distributor and 8 nodes (tests/e2e/test_chaos.py); `make test` runs it
# too, at the CI length. Longer by hand: make chaos CHAOS_SECONDS=900 (MESH_CHAOS_SEED=... replays).
chaos: setup
	MESH_CHAOS_SECONDS=$(CHAOS_SECONDS) $(VENV_PY) -m pytest tests/e2e/test_chaos.py -rP $(PYTEST_ARGS)

# A distributor and 3 nodes on loopback, FUZZ_ARGS' frames at their ports; prints frames/s and
# crashes (expect 0). CI runs only a small one (tests/integration/test_fuzz_smoke.py).
fuzz:
	bash scripts/venv.sh
	$(VENV_PY) -m bench.fuzz $(FUZZ_ARGS)

# Storm, propagation, messaging and memory figures on loopback, then failure detection in
# containers (hence setup); printed, never pass/fail. BENCH_ARGS="--detection-trials 0" skips
# the containers.
bench: setup
	$(VENV_PY) -m bench $(BENCH_ARGS)

lint:
	bash scripts/venv.sh
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

format:
	bash scripts/venv.sh
	$(VENV_PY) -m ruff check --fix .
	$(VENV_PY) -m ruff format .
