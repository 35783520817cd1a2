"""The polyglot example's deployment files, checked offline (docs/polyglot.md): how a
Node.js app and its agent node pair up in docker-compose.yml (profile `polyglot`), in
deploy/swarm/polyglot.yml and in deploy/k8s/polyglot.yaml (the agent a sidecar in the
app's pod), and the gateway and DNS ports on every member.

- Kubernetes: strict validation with kubernetes-validate (as test_k8s_manifests.py does),
  then what no schema sees: the agent's environment is one the node reads (issue 20's names
  allowed ahead of the code) and parses; the instance it registers is the app in its own
  pod (no address: the pod's IP, the agent's advertise host; the check on 127.0.0.1 at the
  app's port and readiness path); both containers locked down; the app serves while its
  agent drains; the gateway Service reaches every member's gateway port.
- Compose and Swarm: three explicit pairs, app and agent in separate containers, each agent
  given its own instances file (hello-N.json: address and check name its own app), one
  gateway published; `docker compose config` and `docker stack config` accept the files
  where the docker command line is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from node import config as node_config
from tests.unit.test_k8s_manifests import (
    IMAGE_UID,
    K8S,
    ROOT,
    STACK,
    _interpolated,
    accepted,
    as_started,
    documents,
    env_of,
    generated_secrets,
    kustomization,
    one,
    port_named,
    served_paths,
)

POLYGLOT = ROOT / "examples" / "polyglot"
COMPOSE = ROOT / "docker-compose.yml"
SWARM_POLYGLOT = ROOT / "deploy" / "swarm" / "polyglot.yml"
PAIRS = (1, 2, 3)
GATEWAY_PORT = 9180
DNS_PORT = 8600
APP_PORT = 3000  # server.js's default PORT, and the Dockerfile's
DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
SAMPLES = {"status.podIP": "10.1.2.3", "metadata.name": "hello-7d9f-abcde"}


# --- the instance definition (Consul's service-definition JSON) -----------------------------


def _lower(value: Any) -> Any:
    """Keys matched case-insensitively, as the node (and Consul) do."""
    if isinstance(value, dict):
        return {k.lower(): _lower(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower(v) for v in value]
    return value


def definition(text: str) -> dict[str, Any]:
    """The one service that a `{"service": {...}}` file defines, keys lowercased, with the
    shape the node accepts: a DNS-label name, a port, one HTTP check with durations."""
    doc = _lower(json.loads(text))
    assert set(doc) == {"service"}, doc
    service = doc["service"]
    assert DNS_LABEL.match(service["name"]), service
    assert 1 <= service["port"] <= 65535, service
    check = service["check"]
    assert GO_DURATION.match(check["interval"]) and GO_DURATION.match(check["timeout"]), check
    assert urlsplit(check["http"]).scheme == "http", check
    return service


def test_server_js_serves_the_checked_path() -> None:
    source = (POLYGLOT / "server.js").read_text()
    assert 'rest === "/health"' in source
    assert "process.env.PORT || 3000" in source
    assert "require(" in source and not re.search(r"require\(\"(?!http\"|os\")", source)
    dockerfile = (POLYGLOT / "Dockerfile").read_text()
    assert f"PORT={APP_PORT}" in dockerfile


def app_uid() -> int:
    (uid,) = re.findall(r"^USER (\d+)", (POLYGLOT / "Dockerfile").read_text(), re.M)
    return int(uid)


# --- Kubernetes --------------------------------------------------------------------------------


def polyglot_documents() -> list[dict[str, Any]]:
    docs = []
    for name in ("polyglot.yaml", "gateway.yaml"):
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def test_the_new_manifests_validate_and_are_in_the_kustomization() -> None:
    version = kubernetes_validate.latest_version()
    kinds = set()
    for doc in polyglot_documents():
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add((doc["kind"], doc["metadata"]["name"]))
    assert kinds == {
        ("ConfigMap", "hello-instances"),
        ("Deployment", "hello"),
        ("PodDisruptionBudget", "hello"),
        ("Service", "gateway"),
    }
    assert {"polyglot.yaml", "gateway.yaml"} <= set(kustomization()["resources"])


def hello() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The Deployment's pod spec, its app container and its agent container."""
    deployment = one("Deployment", "hello")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["app", "agent"], list(containers)
    return pod, containers["app"], containers["agent"]


def test_hello_is_an_app_with_its_agent_as_a_sidecar() -> None:
    deployment = one("Deployment", "hello")
    assert deployment["spec"]["replicas"] == 3
    _, app, agent = hello()
    # the agent runs the mesh's image (kustomization's one override) as a node
    (image,) = kustomization()["images"]
    assert agent["image"].rsplit(":", 1)[0] == image["name"]
    assert agent["args"] == ["node"]
    assert app["image"].rsplit(":", 1)[0] == "mesh-hello"
    assert port_named(app, "app") == APP_PORT == int(env_of(app)["PORT"]["value"])
    assert env_of(app)["HOST"]["value"] == "0.0.0.0"  # gateways in other pods dial the pod IP
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = one("PodDisruptionBudget", "hello")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _agent_environment(tmp: Path) -> dict[str, str]:
    """The agent's environment as the kubelet gives it: the secret's keys and the
    ConfigMap's file written where the *_FILE variables point."""
    pod, _, agent = hello()
    (secret,) = generated_secrets()

    def content(name: str, value: str, volume: dict[str, Any], key: str) -> str:
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            assert key in secret["data"], (name, value)
            return "a-value-from-the-secret\n"
        config_map = one("ConfigMap", volume["configMap"]["name"])
        assert key in config_map["data"], (name, value)
        return config_map["data"][key]

    return as_started(agent, pod, SAMPLES, tmp, content)


def test_the_agents_environment_is_read_and_parses(tmp_path: Path) -> None:
    _, _, agent = hello()
    unknown = set(env_of(agent)) - accepted("node")
    assert not unknown, f"the agent sets {unknown}: not read"
    env = _agent_environment(tmp_path)
    config = node_config.parse([], env)
    assert config.advertise_host == SAMPLES["status.podIP"]
    assert config.name == SAMPLES["metadata.name"]
    assert len(config.distributors) == 2
    assert config.http_host == "0.0.0.0"
    assert config.tuning.secret == b"a-value-from-the-secret"
    assert env["MESH_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert env["MESH_DNS_PORT"] == str(DNS_PORT)
    assert Path(env["MESH_INSTANCES_FILE"]).exists()
    # the node's own file, with the same distributors and drain as node.yaml's nodes
    node = env_of(container_named(one("Deployment", "node"), "node"))
    for name in ("MESH_DISTRIBUTORS", "MESH_DRAIN_SECONDS", "MESH_PORT", "MESH_HTTP_PORT"):
        assert env[name] == node[name]["value"], name


def container_named(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def test_the_instance_is_the_app_in_the_same_pod() -> None:
    """Registered without an address (the agent's advertise host: the pod's IP, where the
    app listens), checked inside the pod at the app's port and readiness path."""
    _, app, agent = hello()
    config_map = one("ConfigMap", "hello-instances")
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "instances")
    file = env_of(agent)["MESH_INSTANCES_FILE"]["value"]
    assert file.rpartition("/")[0] == mount["mountPath"] and mount["readOnly"] is True
    service = definition(config_map["data"][file.rpartition("/")[2]])
    assert service["name"] == "hello"
    assert "address" not in service  # the agent's advertise host: status.podIP
    advertise = env_of(agent)["MESH_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert advertise == "status.podIP"
    assert service["port"] == port_named(app, "app")
    check = urlsplit(service["check"]["http"])
    assert check.hostname in ("127.0.0.1", "localhost")  # the pod's own loopback
    assert check.port == port_named(app, "app")
    assert check.path == app["readinessProbe"]["httpGet"]["path"] == "/health"


def test_both_containers_are_locked_down_and_sized() -> None:
    pod, app, agent = hello()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert app["securityContext"]["runAsUser"] == app_uid()
    assert agent["securityContext"]["runAsUser"] == IMAGE_UID
    for c in (app, agent):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
    # the mesh's secret is the agent's alone
    assert "volumeMounts" not in app


def test_the_agent_drains_while_the_app_still_serves() -> None:
    pod, app, agent = hello()
    node = container_named(one("Deployment", "node"), "node")
    for kind in ("livenessProbe", "readinessProbe"):
        assert agent[kind] == node[kind], kind
        assert agent[kind]["httpGet"]["path"] in served_paths("node")
    assert agent["lifecycle"] == node["lifecycle"]  # the drain through PUT /v1/self
    drain = float(env_of(agent)["MESH_DRAIN_SECONDS"]["value"])
    command = app["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and float(command[1]) >= drain
    assert pod["terminationGracePeriodSeconds"] > max(float(command[1]), 5 + drain + 2)


def test_every_member_has_the_gateway_and_dns_ports() -> None:
    members = [
        container_named(one("Deployment", "node"), "node"),
        hello()[2],
    ]
    for c in members:
        env = env_of(c)
        assert env["MESH_GATEWAY_PORT"]["value"] == str(GATEWAY_PORT), c["name"]
        assert env["MESH_DNS_PORT"]["value"] == str(DNS_PORT), c["name"]
        assert port_named(c, "gateway") == GATEWAY_PORT
        dns = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
        assert {(DNS_PORT, "UDP"), (DNS_PORT, "TCP")} <= dns, c["name"]


def test_the_gateway_service_reaches_every_members_gateway() -> None:
    service = one("Service", "gateway")
    selector = service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == GATEWAY_PORT
    selected = []
    for doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if selector.items() <= labels.items():
                selected.append(doc["metadata"]["name"])
                containers = doc["spec"]["template"]["spec"]["containers"]
                targets = [
                    p["containerPort"]
                    for c in containers
                    for p in c.get("ports", [])
                    if p.get("name") == port["targetPort"]
                ]
                assert targets == [GATEWAY_PORT], doc["metadata"]["name"]
    assert sorted(selected) == ["hello", "node"]  # every node, no distributor


# --- compose and swarm: explicit pairs ----------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def swarm() -> dict[str, Any]:
    return yaml.safe_load(SWARM_POLYGLOT.read_text())


def instances_file(n: int) -> Path:
    return POLYGLOT / f"hello-{n}.json"


def check_pair(n: int, app: dict[str, Any], agent: dict[str, Any]) -> dict[str, str]:
    """What every file's pair N must be: two services (two containers, no shared network
    namespace), the app named hello-N in its answers, its agent a node whose instance is
    hello-N:3000, checked on /health. Returns the agent's environment."""
    assert "network_mode" not in app and "network_mode" not in agent
    assert app["environment"]["INSTANCE_NAME"] == f"hello-{n}"
    assert agent["command"] == ["node"]
    assert "mesh:latest" in agent["image"] and "mesh-hello:latest" in app["image"]
    service = definition(instances_file(n).read_text())
    assert service["id"] == f"hello-{n}"
    assert service["address"] == f"hello-{n}"  # the app's own service name
    assert service["port"] == APP_PORT
    assert service["check"]["http"] == f"http://hello-{n}:{APP_PORT}/health"
    env = {k: _interpolated(v) for k, v in agent["environment"].items()}
    assert env["MESH_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert env["MESH_DNS_PORT"] == str(DNS_PORT)
    assert env["MESH_NAME"] == f"hello-{n}-agent"
    unknown = set(env) - accepted("node")
    assert not unknown, f"hello-{n}-agent sets {unknown}: not read"
    return env


def test_compose_pairs_each_app_with_its_own_agent() -> None:
    services = compose()["services"]
    built = [name for name, spec in services.items() if "build" in spec]
    assert built == ["distributor", "hello-1"]  # each image built once
    for n in PAIRS:
        app, agent = services[f"hello-{n}"], services[f"hello-{n}-agent"]
        assert app["profiles"] == agent["profiles"] == ["polyglot"]
        env = check_pair(n, app, agent)
        # the instances file, mounted read-only where MESH_INSTANCES_FILE points
        source, target, mode = agent["volumes"][0].split(":")
        assert (ROOT / source).resolve() == instances_file(n).resolve()
        assert target == env["MESH_INSTANCES_FILE"] and mode == "ro"
        assert app["healthcheck"]["test"] == ["CMD", "node", "/app/server.js", "--check"]
        if n != 1:
            assert app["pull_policy"] == "never"
    assert "${NODE_BASE_IMAGE:-node:18-bookworm-slim}" in str(services["hello-1"]["build"])


def test_compose_sets_the_gateway_on_every_node_and_publishes_one_on_loopback() -> None:
    services = compose()["services"]
    nodes = [n for n, s in services.items() if "MESH_DISTRIBUTORS" in s.get("environment", {})]
    assert {"node", "hello-1-agent", "hello-2-agent", "hello-3-agent"} <= set(nodes)
    fixed = []
    for name in nodes:
        env = services[name]["environment"]
        assert env["MESH_GATEWAY_PORT"] == str(GATEWAY_PORT), name
        assert env["MESH_DNS_PORT"] == str(DNS_PORT), name
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
            if port.endswith(f":{GATEWAY_PORT}") and "::" not in port:
                fixed.append((name, port))
    # one user port a profile: the polyglot apps' and the Python example's
    assert fixed == [
        ("gateway", "127.0.0.1:${MESH_EXAMPLE_GATEWAY_PORT:-8080}:9180"),
        ("hello-1-agent", "127.0.0.1:${MESH_POLYGLOT_GATEWAY_PORT:-9180}:9180"),
    ]


def test_the_swarm_pairs_match_compose(tmp_path: Path) -> None:
    doc = swarm()
    services = doc["services"]
    stack = yaml.safe_load(STACK.read_text())
    assert sorted(services) == sorted(f"hello-{n}{s}" for n in PAIRS for s in ("", "-agent"))
    for n in PAIRS:
        app, agent = services[f"hello-{n}"], services[f"hello-{n}-agent"]
        env = check_pair(n, app, agent)
        for spec in (app, agent):
            assert spec["deploy"]["replicas"] == 1
            assert spec["deploy"]["endpoint_mode"] == "dnsrr"  # hello-N: that task's address
            assert spec["read_only"] is True and spec["cap_drop"] == ["ALL"]
        (config,) = agent["configs"]
        assert config["target"] == env["MESH_INSTANCES_FILE"]
        source = (SWARM_POLYGLOT.parent / doc["configs"][config["source"]]["file"]).resolve()
        assert source == instances_file(n).resolve()
        # the stack's secrets, where the *_FILE variables point, and the config parses
        assert {s["source"] for s in agent["secrets"]} == set(stack["secrets"])
        for name in ("MESH_SECRET_FILE", "MESH_HTTP_TOKEN_FILE"):
            assert env[name] in {f"/run/secrets/{s['source']}" for s in agent["secrets"]}
            env[name] = str(tmp_path / name)
            Path(env[name]).write_text("a-secret\n")
        env["MESH_INSTANCES_FILE"] = str(source)  # where the config comes from
        config_ = node_config.parse([], env)
        assert config_.name == f"hello-{n}-agent"
        assert [d.id for d in config_.instances] == [f"hello-{n}"]
    published = [(n, p) for n, s in services.items() for p in s.get("ports", [])]
    assert [(n, p["target"], p["mode"]) for n, p in published] == [
        ("hello-1-agent", GATEWAY_PORT, "host")
    ]
    node_env = stack["services"]["node"]["environment"]
    assert node_env["MESH_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert node_env["MESH_DNS_PORT"] == str(DNS_PORT)


# --- the docker command line's own reading, where it is installed ---------------------------


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker command line is not installed")
    return subprocess.run([docker, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_docker_compose_reads_the_profile_and_leaves_the_default_alone() -> None:
    if _docker("compose", "version").returncode != 0:
        pytest.skip("docker compose (v2) is not installed")
    default = _docker("compose", "config", "--services")
    assert default.returncode == 0, default.stderr
    assert set(default.stdout.split()) == {"distributor", "node"}
    polyglot = _docker("compose", "--profile", "polyglot", "config", "--format", "json")
    assert polyglot.returncode == 0, polyglot.stderr
    services = json.loads(polyglot.stdout)["services"]
    for n in PAIRS:
        agent = services[f"hello-{n}-agent"]
        (volume,) = agent["volumes"]
        assert volume["read_only"] is True
        assert Path(volume["source"]).resolve() == instances_file(n).resolve()
        assert agent["environment"]["MESH_INSTANCES_FILE"] == volume["target"]


def test_docker_stack_config_merges_the_polyglot_file() -> None:
    if "config" not in _docker("stack", "--help").stdout:
        pytest.skip("this docker has no `docker stack config`")
    merged = _docker("stack", "config", "-c", str(STACK), "-c", str(SWARM_POLYGLOT))
    assert merged.returncode == 0, merged.stderr
    services = yaml.safe_load(merged.stdout)["services"]
    assert {"distributor", "node", "hello-1", "hello-1-agent"} <= set(services)
