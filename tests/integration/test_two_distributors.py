"""Several distributors, as the Kubernetes and Swarm deployments use them (issue 13).

Nodes registered with two distributors must keep one consistent view while the two
disagree: one restarted (its first snapshots hold only the nodes that have re-registered
so far), the other not; a join that only one of them saw; a leave or a crash while one is
down. On loopback: each distributor restarts in turn (one stopped cleanly, one killed),
with joins, a clean leave and a crash while it is down and right after it returns.
Every node ends with exactly the live set (members and connected peers), both
distributors list exactly it, and no peer link between live nodes is dropped at any
point: sampled continuously in a thread the whole time.

One corner takes longer than the rest: a node killed just after it dialled a restarted
distributor has bumped its incarnation for that registration (and its peers heard the
new one), but the other distributor's `member_left` names the older incarnation it knew,
which does not cover the newer one. Nobody lists the dead node any more, so its peers
forget it when the peer retry window ends (MESH_PEER_RETRY_WINDOW, shortened here);
hence the deadlines of that window plus the usual 30 s.
"""

from __future__ import annotations

import signal
import threading
import time

from harness.ports import free_port
from harness.procs import Proc
from harness.waiting import DEADLINE, Sampler, wait_for
from tests.integration.cluster import Cluster, registered_ids, status

RETRY_WINDOW = 10.0  # MESH_PEER_RETRY_WINDOW: see the module's docstring


class TwoDistributors:
    """A cluster whose nodes all register with both distributors; which ones are live, and
    the peer links among live nodes that must never drop."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        cluster.env["MESH_PEER_RETRY_WINDOW"] = str(RETRY_WINDOW)
        self.ports = [free_port(), free_port()]
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.distributors: list[Proc | None] = [self.start_distributor(i) for i in (0, 1)]
        self.nodes: dict[str, Proc] = {}
        self.ids: dict[str, str] = {}
        self._links: dict[tuple[str, str], str] = {}  # (node name, peer id) -> since
        self._lock = threading.Lock()
        self._last = ""  # why the last `consistent` failed

    # --- processes -------------------------------------------------------------------------

    def start_distributor(self, i: int) -> Proc:
        return self.cluster.distributor(port=self.ports[i], name=f"distributor-{i}")

    def stop_distributor(self, i: int, sig: signal.Signals) -> None:
        proc = self.distributors[i]
        assert proc is not None and proc.popen is not None
        proc.signal(sig)
        proc.popen.wait(timeout=10)
        self.distributors[i] = None

    def join(self, name: str) -> None:
        extra = [flag for address in self.addresses for flag in ("--distributor", address)]
        self.nodes[name] = node = self.cluster.node(name, distributor=False, extra=extra)
        self.ids[name] = status(node)["id"]

    def leave(self, name: str, sig: signal.Signals) -> None:
        """SIGTERM: a clean leave; SIGKILL: a crash. Its links stop being watched first."""
        node_id = self.ids[name]
        with self._lock:
            self._links = {
                (n, p): s for (n, p), s in self._links.items() if n != name and p != node_id
            }
        node = self.nodes.pop(name)
        del self.ids[name]
        assert node.popen is not None
        node.signal(sig)
        code = node.popen.wait(timeout=10)
        if sig == signal.SIGTERM:
            assert code == 0, f"{name} exited {code} on SIGTERM"

    # --- views --------------------------------------------------------------------------------

    def consistent(self) -> bool:
        """Every live node has exactly the other live nodes as members and as connected
        peers, and every running distributor as `connected`; every running distributor
        lists exactly the live nodes. Raises AssertionError with what is missing."""
        live = set(self.ids.values())
        running = [(a, d) for a, d in zip(self.addresses, self.distributors, strict=True) if d]
        for name, node in self.nodes.items():
            st = status(node)
            others = live - {self.ids[name]}
            members = {m["id"] for m in st["members"]}
            peers = {p["id"]: p["state"] for p in st["peers"]}
            if members != others or set(peers) != others:
                raise AssertionError(f"{name}: members {members}, peers {peers}; live {others}")
            if set(peers.values()) - {"connected"}:
                raise AssertionError(f"{name}: peers not all connected: {peers}")
            states = {d["address"]: d["state"] for d in st["distributors"]}
            if any(states[address] != "connected" for address, _ in running):
                raise AssertionError(f"{name}: distributors {states}")
        for address, distributor in running:
            if (listed := registered_ids(distributor)) != live:
                raise AssertionError(f"{address} lists {listed}, live {live}")
        return True

    def settle(self, what: str) -> float:
        """Waits until `consistent`, then watches every link among live nodes from now on.
        Returns how long it took."""
        t0 = time.monotonic()
        try:
            wait_for(what, self._consistent_or_false, timeout=RETRY_WINDOW + DEADLINE)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {self._last}") from None
        took = time.monotonic() - t0
        with self._lock:
            for name, node in self.nodes.items():
                for peer in status(node)["peers"]:
                    self._links.setdefault((name, peer["id"]), peer["since"])
        return took

    def _consistent_or_false(self) -> bool:
        try:
            return self.consistent()
        except AssertionError as exc:
            self._last = str(exc)
            return False

    def links_problem(self) -> str | None:
        """None while every watched link is `connected` with the `since` it had when it
        was first watched (never closed, not even between two samples)."""
        with self._lock:
            links = dict(self._links)
            nodes = dict(self.nodes)
        views = {}
        for name, node in nodes.items():
            try:
                views[name] = {p["id"]: p for p in status(node)["peers"]}
            except (OSError, ValueError, AssertionError):
                with self._lock:
                    if name not in self.nodes:
                        continue  # it was stopped after the copy: its links are not watched
                raise
        for (name, peer_id), since in links.items():
            peer = views.get(name, {}).get(peer_id)
            if peer is None or peer["state"] != "connected" or peer["since"] != since:
                with self._lock:
                    if (name, peer_id) not in self._links:
                        continue  # one end was stopped on purpose since the copy
                return f"{name}: the link to {peer_id} (connected since {since}) is now {peer}"
        return None

    def watched(self) -> int:
        with self._lock:
            return len(self._links)


def test_two_distributors_restarted_in_turn_with_joins_and_leaves(make_cluster, record_figure):
    mesh = TwoDistributors(make_cluster(steady=True))
    for name in ("a", "b", "c", "d"):
        mesh.join(name)
    record_figure("two distributors: 4 nodes consistent after", mesh.settle("4 nodes, both lists"))

    with Sampler("no peer link among live nodes drops", mesh.links_problem) as sampler:
        # distributor-0 stops cleanly (it tells its nodes); while it is down, a node joins
        # (only distributor-1 sees it) and one leaves
        mesh.stop_distributor(0, signal.SIGTERM)
        mesh.join("e")
        mesh.leave("b", signal.SIGTERM)
        mesh.settle("e in and b out with distributor-0 down")
        # distributor-0 returns empty: until every node has re-registered, the two
        # disagree. A join and a crash in that window.
        mesh.distributors[0] = mesh.start_distributor(0)
        mesh.join("f")
        mesh.leave("c", signal.SIGKILL)
        took = mesh.settle("distributor-0 back, f in, c crashed: both lists agree")
        record_figure("two distributors: consistent after distributor-0's restart", took)

        # distributor-1 crashes; while it is down a node crashes and one joins
        mesh.stop_distributor(1, signal.SIGKILL)
        mesh.leave("a", signal.SIGKILL)
        mesh.join("g")
        mesh.settle("a crashed and g in with distributor-1 down")
        # distributor-1 returns; a clean leave and a join right away
        mesh.distributors[1] = mesh.start_distributor(1)
        mesh.leave("d", signal.SIGTERM)
        mesh.join("h")
        took = mesh.settle("distributor-1 back, d out, h in: both lists agree")
        record_figure("two distributors: consistent after distributor-1's restart", took)
        time.sleep(2.0)  # several heartbeat intervals of agreement, still sampled

    assert sorted(mesh.nodes) == ["e", "f", "g", "h"]
    assert mesh.consistent()
    assert mesh.watched() == 4 * 3
    record_figure("two distributors: peer-link samples", sampler.samples, "samples")
