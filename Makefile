# The two commands: `make up` (set up, then a distributor and five nodes in the foreground)
# and `make test`. Every target is phony: tests/ and bench/ are folders.
.PHONY: help setup up down test test-local test-e2e docs-check chaos fuzz bench lint format swarm-up swarm-down

VENV_PY := .venv/bin/python
NODES ?= 5
PYTEST_ARGS ?=
CHAOS_SECONDS ?= 180
FUZZ_ARGS ?= --frames 1000000
BENCH_ARGS ?=
STACK ?= mesh
SWARM_HTTP_PORT ?= 9100

help:
	@echo "make setup   install what is missing (compose v2, base images, wheelhouse, .venv, test tools, .env), build the images"
	@echo "make up      setup, then docker compose up --build --scale node=$(NODES) (Ctrl-C stops it)"
	@echo "make down    remove the containers and network of make up"
	@echo "make test    setup and docs-check, then pytest: unit, integration and e2e (PYTEST_ARGS=... to pass more)"
	@echo "make test-local  unit and integration tests in .venv, no Docker needed"
	@echo "make docs-check  every relative link and every make target in README.md and docs/*.md exists"
	@echo "make chaos   setup, then the chaos test for CHAOS_SECONDS=$(CHAOS_SECONDS) s (make test runs it at 180)"
	@echo "make fuzz    hostile frames and DNS packets at a live cluster on loopback (FUZZ_ARGS=\"$(FUZZ_ARGS)\")"
	@echo "make bench   benchmarks: tables on stdout, bench/results/<UTC time>.json and .png (under 15 min)"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make swarm-up    setup, then the stack on Docker Swarm: STACK=$(STACK), NODES=$(NODES), distributor HTTP on :$(SWARM_HTTP_PORT)"
	@echo "make swarm-down  remove the stack; leave swarm mode if swarm-up entered it"

setup:
	bash scripts/setup.sh

# Compose 2.26.1 (trixie's) can panic on Ctrl-C while it stops the containers
# (docker/compose#11710), so they are stopped once more after it returns, however it ends.
up: setup
	docker compose up --build --scale node=$(NODES); status=$$?; \
	docker compose stop >/dev/null 2>&1; exit $$status

down:
	docker compose down --volumes --remove-orphans

test: setup docs-check
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

# Unit and integration tests (processes on loopback) in the venv: no Docker, no images.
test-local:
	bash scripts/venv.sh
	$(VENV_PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)

# Standard library only, so it runs before set-up too (the venv's python when there is one).
docs-check:
	@py=$(VENV_PY); [ -x "$$py" ] || py=python3; "$$py" scripts/docs-check.py

test-e2e: setup
	$(VENV_PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Random faults, one at a time, on 10 containers: a distributor and 9 nodes
# (tests/e2e/test_chaos.py); `make test` runs it too, at the CI length. Longer by hand:
# make chaos CHAOS_SECONDS=600 (at least 10 faults a minute, so 100 there; MESH_CHAOS_SEED=...
# replays).
chaos: setup
	MESH_CHAOS_SECONDS=$(CHAOS_SECONDS) $(VENV_PY) -m pytest tests/e2e/test_chaos.py -rP $(PYTEST_ARGS)

# A distributor and 3 nodes on loopback, FUZZ_ARGS' frames at their ports, then DNS packets
# (a quarter as many; --dns-packets N) at their DNS ports; prints frames/s, packets/s and
# crashes (expect 0). CI runs only a small one (tests/integration/test_fuzz_smoke.py).
fuzz:
	bash scripts/venv.sh
	$(VENV_PY) -m bench.fuzz $(FUZZ_ARGS)

# The benchmark tables (docs/benchmarks.md): storm (N up to 10,000), propagation, messaging,
# memory and one join to 10,000 nodes on loopback, each figure min/median/max of 3 runs (the join: of 5 joins) beside
# its yardstick of the same run, then failure detection in containers (hence setup); printed,
# never pass/fail; under 15 minutes on 2 CPUs. BENCH_ARGS="--detection-trials 0" skips the
# containers, BENCH_ARGS=--baseline also writes bench/baseline.json and bench/storm.png.
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

# The stack on Docker Swarm (deploy/swarm/stack.yml; docs/deploying.md). swarm-up enters
# swarm mode only if the engine is not in it (and notes that in build/swarm/initialised, so
# swarm-down leaves it again), makes the two secret files once (build/swarm/, random, never
# committed) and deploys the locally built image without asking a registry.
SWARM_DIR := build/swarm
SWARM_MARK := $(SWARM_DIR)/initialised

swarm-up: setup
	@mkdir -p $(SWARM_DIR)
	@for f in mesh-secret http-token; do \
	    [ -s $(SWARM_DIR)/$$f ] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >$(SWARM_DIR)/$$f); \
	done
	@state=$$(docker info --format '{{.Swarm.LocalNodeState}}'); \
	if [ "$$state" = inactive ]; then \
	    bridge=$$(docker network inspect docker_gwbridge >/dev/null 2>&1 && echo kept || echo made); \
	    docker swarm init >/dev/null 2>$(SWARM_DIR)/init.err || \
	        docker swarm init --advertise-addr 127.0.0.1 >/dev/null || { cat $(SWARM_DIR)/init.err >&2; exit 1; }; \
	    rm -f $(SWARM_DIR)/init.err; \
	    echo "gwbridge=$$bridge" >$(SWARM_MARK); \
	    echo "swarm: this engine is now a single-node swarm (make swarm-down leaves it)"; \
	elif [ "$$state" != active ]; then \
	    echo "swarm: the engine's swarm state is $$state; fix that first" >&2; exit 1; \
	fi
	@if ! docker stack ls --format '{{.Name}}' | grep -qx '$(STACK)' && \
	    $(VENV_PY) -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
	        $(SWARM_HTTP_PORT) 2>/dev/null; then \
	    echo "swarm: port $(SWARM_HTTP_PORT) is in use (make up's distributor?): make swarm-up SWARM_HTTP_PORT=9190" >&2; \
	    exit 1; \
	fi
	MESH_NODES=$(NODES) MESH_SWARM_HTTP_PORT=$(SWARM_HTTP_PORT) \
	    docker stack deploy --resolve-image never -c deploy/swarm/stack.yml $(STACK)
	@echo "waiting for the tasks to run (up to 60 s)..."; \
	for i in $$(seq 60); do \
	    want=$$(docker stack services $(STACK) --format '{{.Replicas}}' | awk -F/ '$$1 != $$2' | wc -l); \
	    [ "$$want" = 0 ] && break; sleep 1; \
	done; \
	docker stack services $(STACK)

swarm-down:
	@if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx '$(STACK)'; then \
	    docker stack rm $(STACK); \
	    echo "waiting for its containers and network to go (up to 60 s)..."; \
	    for i in $$(seq 60); do \
	        left=$$(docker ps -aq --filter label=com.docker.stack.namespace=$(STACK); \
	                docker network ls -q --filter label=com.docker.stack.namespace=$(STACK)); \
	        [ -z "$$left" ] && break; sleep 1; \
	    done; \
	fi
	@if [ -f $(SWARM_MARK) ]; then \
	    if [ -n "$$(docker service ls -q)" ]; then \
	        echo "swarm: other services still run; staying in swarm mode (docker swarm leave --force)"; \
	    else \
	        docker swarm leave --force; \
	        grep -q gwbridge=made $(SWARM_MARK) && docker network rm docker_gwbridge >/dev/null 2>&1; \
	        rm -f $(SWARM_MARK); \
	    fi; \
	fi
