"""End-to-end fixtures: the real image, run by docker compose through testcontainers.

One compose project per test module, under a unique project name, so a user's `make up`
(project `mesh`, port 9100) is never touched. The distributor's HTTP port is published on
an ephemeral 127.0.0.1 port and the nodes' on ephemeral 127.0.0.1 ports; the tests reach
containers only through those. Teardown (`down --volumes`, which removes the network)
runs on failure too; the built image is kept for the next run. The containers' logs are
saved in build/e2e-logs/.

Without a Docker engine the e2e tests skip, unless MESH_REQUIRE_DOCKER=1 (CI), where it is
a failure. A missing `docker compose` (v2) is always a failure that says so.
"""

import os
import subprocess

import pytest
from e2e_harness import ROOT, compose_project

# pytest-timeout's limit for each e2e test (pyproject's 300 s is for the others): the first
# test of a module also builds the image and brings its compose project or swarm stack up
# (a swarm stack may wait 900 s for its services), and chaos runs MESH_CHAOS_SECONDS
E2E_TIMEOUT = 1800
CHAOS_SET_UP_AND_CHECKS = 1200  # beside the chaos run itself


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    chaos_seconds = float(os.environ.get("MESH_CHAOS_SECONDS") or 180)
    for item in items:
        if "tests/e2e/" not in item.nodeid.replace(os.sep, "/") or item.get_closest_marker(
            "timeout"
        ):
            continue
        limit = E2E_TIMEOUT
        if item.module is not None and item.module.__name__.endswith("test_chaos"):
            limit = max(E2E_TIMEOUT, chaos_seconds + CHAOS_SET_UP_AND_CHECKS)
        item.add_marker(pytest.mark.timeout(limit))


def _unavailable(why: str) -> None:
    if os.environ.get("MESH_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{why} (MESH_REQUIRE_DOCKER=1, so this is a failure, not a skip)")
    pytest.skip(why)


def _dotenv() -> dict[str, str]:
    path = ROOT / ".env"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


@pytest.fixture(scope="session")
def docker_client():
    """A Docker SDK client, once the engine, compose v2 and the base image are there."""
    try:
        import docker
    except ImportError as exc:
        _unavailable(f"the docker SDK is not installed: {exc}")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine: {exc}")
    try:
        version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    except FileNotFoundError as exc:
        pytest.fail(f"the docker command line is missing: {exc}")
    if version.returncode != 0:
        pytest.fail(
            "`docker compose version` failed: Docker Compose v2 is missing "
            f"({(version.stderr or version.stdout).strip()}). `make setup` installs it."
        )
    base = os.environ.get("BASE_IMAGE") or _dotenv().get("BASE_IMAGE")
    if base and not client.images.list(name=base):
        pytest.fail(f"the base image {base} (from .env) is missing: `make setup` builds it")
    yield client
    client.close()


@pytest.fixture(scope="module")
def mesh(docker_client, record_figure):
    """Builds the image (cached when nothing changed), starts a distributor and 5 nodes
    under a unique project name, waits until all are healthy, and tears it all down after
    (e2e_harness.compose_project)."""
    with compose_project(docker_client, record_figure, nodes=5) as mesh:
        yield mesh
