# The two commands: `make up` (set up, then a distributor and five nodes in the foreground)
# and `make test`. Every target is phony: tests/ and bench/ are folders.
.PHONY: help setup up down test test-e2e lint format

VENV_PY := .venv/bin/python
NODES ?= 5
PYTEST_ARGS ?=

help:
	@echo "make setup   install what is missing (compose v2, base image, wheelhouse, .venv, .env), build the image"
	@echo "make up      setup, then docker compose up --build --scale node=$(NODES) (Ctrl-C stops it)"
	@echo "make down    remove the containers and network of make up"
	@echo "make test    setup, then pytest: unit, integration and e2e (PYTEST_ARGS=... to pass more)"
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

lint:
	bash scripts/venv.sh
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

format:
	bash scripts/venv.sh
	$(VENV_PY) -m ruff check --fix .
	$(VENV_PY) -m ruff format .
