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
import time
import uuid

import pytest
from e2e_harness import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, ROOT, Mesh


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
    under a unique project name, waits for the full mesh, and tears it all down after."""
    from testcontainers.compose import DockerCompose

    project = f"mesh-e2e-{uuid.uuid4().hex[:8]}"
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "COMPOSE_ANSI": "never",  # plain logs in build/e2e-logs
        "MESH_NODES": "5",
        "MESH_DISTRIBUTOR_HTTP_PORT": "0",
        "MESH_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "MESH_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "MESH_RETRY_MAX": "1",
        "MESH_LOG_LEVEL": "info",
        "MESH_HEALTHCHECK_INTERVAL": "2s",
        # The default: `docker kill`/`docker compose kill` leave a container down, and the
        # tests check that they do.
        "MESH_RESTART": "unless-stopped",
    }
    compose = DockerCompose(ROOT, build=True, pull=False, wait=True)
    with pytest.MonkeyPatch.context() as env_patch:
        for key, value in env.items():
            env_patch.setenv(key, value)
        mesh = Mesh(compose, project, docker_client, record_figure)
        t0 = time.monotonic()
        try:
            compose.start()  # up --build --wait: every container healthy
            record_figure("compose up --build --wait (5 nodes)", time.monotonic() - t0)
            yield mesh
            # a process that crashed was restarted by its policy, with a new id, silently
            crashed = {
                c.name: c.attrs["RestartCount"]
                for c in docker_client.containers.list(
                    all=True, filters={"label": f"com.docker.compose.project={project}"}
                )
                if c.attrs["RestartCount"]
            }
            assert not crashed, f"containers restarted after a crash: {crashed}"
        finally:
            mesh.dump_logs()  # before `down`, so a failed start leaves its logs too
            try:
                compose.stop()  # down --volumes: containers and the network
            finally:
                _remove_leftovers(docker_client, project)


def _remove_leftovers(client, project: str) -> None:
    """After `down`: anything of the project still there (a failed down) is removed."""
    label = {"label": f"com.docker.compose.project={project}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters=label):
        network.remove()
    # earlier builds of our image that this run's build untagged (as scripts/setup.sh does)
    client.images.prune(filters={"dangling": True, "label": "org.opencontainers.image.title=mesh"})
