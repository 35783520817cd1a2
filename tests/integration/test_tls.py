"""TLS on every link (MESH_TLS_CERT, MESH_TLS_KEY, MESH_TLS_CA): mutual, with one private CA."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.waiting import holds, wait_for
from tests.integration.cluster import full_mesh, member_ids, registered_ids, status

ROOT = Path(__file__).resolve().parents[2]


def make_ca(directory: Path, *names: str) -> dict[str, dict[str, str]]:
    """scripts/test-ca.sh, as the README says; name -> its MESH_TLS_* variables."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "test-ca.sh"), str(directory), *names],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {
        name: {
            "MESH_TLS_CERT": str(directory / f"{name}.pem"),
            "MESH_TLS_KEY": str(directory / f"{name}.key"),
            "MESH_TLS_CA": str(directory / "ca.pem"),
        }
        for name in names
    }


def foreign_member(directory: Path, ours: dict[str, dict[str, str]]) -> dict[str, str]:
    """MESH_TLS_* of a member whose certificate another CA signed, but who trusts ours: its
    own check of our listeners passes, so only their check of it can keep it out."""
    return {**make_ca(directory, "member")["member"], "MESH_TLS_CA": ours["member"]["MESH_TLS_CA"]}


def test_a_tls_mesh_forms_and_keeps_out_plain_and_foreign_members(make_cluster, tmp_path):
    ours = make_ca(tmp_path / "ca", "distributor", "member")
    foreign = foreign_member(tmp_path / "other-ca", ours)
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor(ours["distributor"])
    nodes = [cluster.node(name, ours["member"]) for name in ("a", "b", "c")]
    ids = wait_for("a full mesh over TLS", lambda: full_mesh(nodes))
    wait_for("all registered", lambda: registered_ids(distributor) == set(ids.values()))

    # a certificate from another CA, and no TLS at all: neither gets in
    outsiders = [cluster.node("foreign", foreign), cluster.node("plain")]
    wait_for(
        "the outsiders' attempts fail",
        lambda: all(status(o)["distributors"][0]["attempts"] >= 2 for o in outsiders),
    )
    # bytes that are not a TLS handshake, to both kinds of listener
    for port in (distributor.port, nodes[0].port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(4096))
            sock.settimeout(10)
            while sock.recv(4096):  # closed by the listener
                pass
    holds(
        "no outsider registers or meshes, and the mesh stays whole",
        lambda: (
            registered_ids(distributor) == set(ids.values())
            and full_mesh(nodes) == ids
            and all(status(o)["peers"] == [] for o in outsiders)
        ),
        seconds=2,
    )


def test_a_node_with_a_foreign_certificate_is_refused_on_a_nodes_peer_port(make_cluster, tmp_path):
    """As the distributor's listener, a node's peer port refuses a certificate from another
    CA: an outsider that has one dials a member as its seed and meshes with no one."""
    ours = make_ca(tmp_path / "ca", "distributor", "member")
    foreign = foreign_member(tmp_path / "other-ca", ours)
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor(ours["distributor"])
    nodes = [cluster.node(name, ours["member"]) for name in ("a", "b")]
    ids = wait_for("a full mesh over TLS", lambda: full_mesh(nodes))

    outsider = cluster.node(
        "foreign",
        {
            **foreign,
            "MESH_DISTRIBUTORS": "",  # the peer port is the only way in
            "MESH_SEEDS": f"127.0.0.1:{nodes[0].port}",
        },
        distributor=False,
    )
    outsider_id = status(outsider)["id"]
    wait_for(
        "the outsider's attempts at the seed fail",
        lambda: (
            sum(1 for line in outsider.logs() if line.get("event") == "seed_attempt_failed") >= 2
        ),
    )
    holds(
        "the outsider meshes with no one, and the mesh stays whole",
        lambda: (
            status(outsider)["peers"] == []
            and all(outsider_id not in member_ids(n) for n in nodes)
            and full_mesh(nodes) == ids
            and registered_ids(distributor) == set(ids.values())
        ),
        seconds=2,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MESH_TLS_CERT": "/nonexistent.pem"}, "MESH_TLS_KEY is unset"),
        (
            {
                "MESH_TLS_CERT": "/nonexistent.pem",
                "MESH_TLS_KEY": "/nonexistent.key",
                "MESH_TLS_CA": "/nonexistent-ca.pem",
            },
            "cannot load the TLS files",
        ),
    ],
)
def test_a_tls_set_up_that_cannot_work_is_a_start_up_error(env, says):
    for module in ("distributor", "node"):
        done = subprocess.run(
            [sys.executable, "-m", module],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            timeout=30,
        )
        assert done.returncode == 2, (module, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], done.stderr
