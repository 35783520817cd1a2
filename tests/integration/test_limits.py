"""Limits: MESH_MAX_CONNECTIONS (connections still in their handshake) and MESH_MAX_MEMBERS.

Beyond them a newcomer gets a `full` error frame and a close; members already in keep
working.
"""

from __future__ import annotations

import socket
import time

from harness.waiting import Sampler, wait_for
from shared.wire import Error
from tests.integration.cluster import first_message, full_mesh, registered_ids, status

LIMIT = 5


def test_past_max_connections_a_newcomer_is_refused_and_members_keep_working(make_cluster):
    cluster = make_cluster(steady=True)
    tight = {"MESH_MAX_CONNECTIONS": str(LIMIT), "MESH_HANDSHAKE_TIMEOUT": "30"}
    distributor = cluster.distributor(tight)
    nodes = [cluster.node(name, tight) for name in ("a", "b")]
    ids = wait_for("a full mesh", lambda: full_mesh(nodes))

    def untouched() -> str | None:
        if registered_ids(distributor) != set(ids.values()):
            return "the distributor's members changed"
        return None if full_mesh(nodes) == ids else "the mesh is not whole"

    for listener in (distributor, nodes[0]):
        # connections that never say hello hold every handshake slot (for 30 s)
        silent = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(LIMIT)]
        try:
            with Sampler(f"{listener.name}'s members keep working", untouched):
                wait_for(
                    f"{listener.name} refuses one more with a `full` error frame",
                    lambda listener=listener: refused_full(listener.port),
                )
                time.sleep(1.5)  # and the members keep working while the slots stay taken
        finally:
            for sock in silent:
                sock.close()
        wait_for(
            f"{listener.name} takes newcomers again",
            lambda port=listener.port: not refused_full(port),
        )


def refused_full(port: int) -> bool:
    """Whether a new connection to `port` gets an error frame `full` before any hello."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(0.5)
        try:
            message = first_message(sock)
        except TimeoutError:  # admitted: the listener waits for our hello
            return False
        return isinstance(message, Error) and message.code == "full"


def test_past_max_members_a_hello_is_refused_with_an_error_frame(make_cluster):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor({"MESH_MAX_MEMBERS": "2"})
    nodes = [cluster.node(name) for name in ("a", "b")]
    ids = wait_for("a full mesh of two", lambda: full_mesh(nodes))
    third = cluster.node("c")
    wait_for(
        "the third node is refused as full, and keeps retrying",
        lambda: (
            status(third)["distributors"][0]["attempts"] >= 2
            and "full" in status(third)["distributors"][0]["last_error"]
        ),
    )
    assert registered_ids(distributor) == set(ids.values())
    assert full_mesh(nodes) == ids
    wait_for("more refusals", lambda: status(third)["distributors"][0]["attempts"] >= 4)
    # one warning for the episode, not a line per refused attempt
    assert full_refusals_logged(distributor) == [("limit_reached", "warning")]
    nodes[1].kill()  # a place frees up: the third gets in by itself
    wait_for(
        "the third node registers in the freed place",
        lambda: status(third)["id"] in registered_ids(distributor),
    )
    fourth = cluster.node("d")  # full again: a new episode, warned once more
    wait_for("d is refused", lambda: status(fourth)["distributors"][0]["attempts"] >= 3)
    assert full_refusals_logged(distributor) == [("limit_reached", "warning")] * 2


def full_refusals_logged(distributor) -> list[tuple[str, str]]:
    """(event, level) of every log line about a registration refused as full."""
    return [
        (line["event"], line["level"])
        for line in distributor.logs()
        if line.get("event") == "limit_reached"
        or (line.get("event") == "registration_refused" and line.get("code") == "full")
    ]
