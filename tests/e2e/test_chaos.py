"""Chaos (issues 5 and 14): random faults, one at a time, on 10 containers (a distributor and
9 nodes), for a bounded time (MESH_CHAOS_SECONDS, 180 by default: the length CI runs;
`make chaos CHAOS_SECONDS=600` by hand), with invariants checked after every heal.

Faults: a node killed (then started again: a new process, a new id), frozen (docker pause),
or cut off (network disconnect, then connect with the service alias); the distributor
killed (then started) or frozen. Each round of five faults has every kind once, in an order
from a seeded RNG, as are the victims and durations; the seed is printed, and
MESH_CHAOS_SEED=<seed> replays the same choices (the timing differs, of course). The run
goes on past MESH_CHAOS_SECONDS until every kind has been injected; a run of 10 minutes or
more must inject at least FAULTS_PER_MINUTE a minute (issue 14: 100 in 10 minutes).

Invariants, with generous deadlines (DESIGN.md, "Timing"), each checked and counted on its
own:
- after each heal, every node has every other as a `connected` peer and member, and only
  them, and is connected to the distributor;
- after each heal, the distributor lists every node, and only them;
- from each fault until its heal is complete, sampled every 200 ms: no link between two
  nodes the fault did not touch was closed (each stays `connected` with the same `since`).
  For a distributor fault that is every link of the mesh. After a node fault the check
  runs on for a heartbeat timeout and more, and both heal invariants are checked again
  (unless the full mesh was first seen only after that): a link of the victim can outlive
  the fault by a few seconds and then die of it.
"""

import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker.errors
import pytest
from e2e_harness import Mesh, NotYet, Replica, compose_project

pytestmark = pytest.mark.e2e

NODES = 9  # and the distributor: 10 containers
SECONDS = float(os.environ.get("MESH_CHAOS_SECONDS") or 180)
# Issue 14: at least 100 faults in a 10-minute run. A rate is a timing, so only a run of that
# length or longer (by hand) fails below it; CI's shorter run prints it (DESIGN.md, "Timing").
FAULTS_PER_MINUTE = 10
MIN_FAULTS = math.floor(SECONDS / 60 * FAULTS_PER_MINUTE)
RATE_ASSERTED_FROM = 600  # seconds
NODE_FAULTS = ("node kill", "node pause", "node partition")
DISTRIBUTOR_FAULTS = ("distributor kill", "distributor pause")
KINDS = NODE_FAULTS + DISTRIBUTOR_FAULTS
# In chaos only, a heartbeat timeout of 1.5 s, not the other e2e tests' 3 s: a fault lasts up
# to twice the timeout and every node fault is followed by a timeout of settling, so the
# timeout sets the pace, and at 3 s FAULTS_PER_MINUTE does not fit (about 7 a minute were
# measured). Five heartbeats to a timeout, so one late beat is not a death.
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = 0.3, 1.5
# A fault lasts from a third of the heartbeat timeout (nothing may be noticed) to twice it.
SHORTEST, LONGEST = 0.5, 2 * HEARTBEAT_TIMEOUT
# Past the heartbeat timeout after a node fault's heal: a link the fault doomed (TCP resends
# what a partition dropped only when its backoff says so) is dead by then.
SETTLE_SLACK = 1.0
PAUSE_TRIES = 5


@pytest.fixture(scope="module")
def chaos_mesh(docker_client, record_figure):
    with compose_project(
        docker_client,
        record_figure,
        nodes=NODES,
        prefix="mesh-chaos",
        MESH_HEARTBEAT_INTERVAL=str(HEARTBEAT_INTERVAL),
        MESH_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
        # A health check is a python process in the container, about 0.15 s of CPU: for 10
        # containers every 2 s (the e2e default) that is about one of the two cores here, for
        # the whole run. Nothing here waits on health after the start: the test asks the
        # nodes itself.
        MESH_HEALTHCHECK_INTERVAL="10s",
    ) as mesh:
        yield mesh


FULL_MESH = "every node sees every other, after the heal"
LISTED = "the distributor lists every node, after the heal"
# a KEPT check is one sample; a FULL_MESH or LISTED one, a heal (a node fault may have two:
# healed, then settled)
KEPT = {
    True: "no link closed, distributor fault (samples)",
    False: "no link among the others closed, node fault (samples)",
}
INVARIANTS = (FULL_MESH, LISTED, KEPT[True], KEPT[False])


@dataclass
class Tally:
    faults: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)  # invariant -> checks (all passed)
    healed_in: dict = field(default_factory=dict)  # fault kind -> slowest heal to full mesh
    spent: Counter = field(default_factory=Counter)  # fault kind -> seconds, whole cycles
    failure: str | None = None  # what broke, in words (the test fails)

    def table(self, seed: int, seconds: float) -> list[str]:
        rows = [
            f"chaos: seed {seed}, {sum(self.faults.values())} faults in {seconds:.0f} s "
            f"({NODES} nodes, heartbeat timeout {HEARTBEAT_TIMEOUT:g} s; "
            f"at least {MIN_FAULTS} "
            f"{'required' if SECONDS >= RATE_ASSERTED_FROM else 'expected, not asserted'})",
            f"  {'fault':<56} {'count':>7}  {'mean cycle':>10}  slowest heal to a full mesh",
        ]
        for kind in KINDS:
            count = self.faults[kind]
            mean = f"{self.spent[kind] / count:.1f} s" if count else "-"
            slowest = f"{self.healed_in[kind]:.1f} s" if kind in self.healed_in else "-"
            rows.append(f"  {kind:<56} {count:>7}  {mean:>10}  {slowest}")
        rows.append(f"  {'invariant':<56} {'checked':>7}  result")
        result = "all passed" if self.failure is None else "passed until the failure below"
        for what in INVARIANTS:
            rows.append(f"  {what:<56} {self.checks[what]:>7}  {result}")
        if self.failure is not None:
            rows.append(f"  FAILED: {self.failure}")
        return rows

    def record(self, record_figure, seed: int) -> None:
        record_figure("chaos seed", seed, "")
        for kind in KINDS:
            record_figure(f"chaos faults injected: {kind}", self.faults[kind], "")
            if kind in self.healed_in:
                record_figure(f"chaos {kind}: slowest heal to a full mesh", self.healed_in[kind])
        for what in INVARIANTS:
            record_figure(f"chaos invariant checked, passed: {what}", self.checks[what], "")


class Fault:
    """One fault: `inject` it, later `heal` it (also when the test fails in between)."""

    def __init__(self, mesh, kind: str, victim) -> None:
        self.mesh, self.kind, self.victim = mesh, kind, victim
        self.network = mesh.client.networks.get(f"{mesh.project}_mesh")
        self.healed = False

    def __str__(self) -> str:
        return f"{self.kind} of {self.victim.container.name}"

    def inject(self) -> None:
        container = self.victim.container
        if self.kind.endswith("kill"):
            container.kill()
        elif self.kind.endswith("pause"):
            _pause(container)
        else:
            self.network.disconnect(container)

    def heal(self) -> None:
        if self.healed:
            return
        self.healed = True
        container = self.victim.container
        if self.kind.endswith("kill"):
            container.start()
        elif self.kind.endswith("pause"):
            container.unpause()
        else:
            # with the service name as alias, as compose gave it (DESIGN.md, "Containers")
            self.network.connect(container, aliases=["node"])
        self.victim.forget_port()  # a start or a reconnect publishes a new host port


def _pause(container) -> None:
    """docker pause, tried again when cgroup v1's freezer gives up ("unable to freeze": a
    process it could not stop in time, seen here under load). runc thaws the container after
    such a failure, so the next try starts from a running one."""
    for attempt in range(1, PAUSE_TRIES + 1):
        try:
            container.pause()
            return
        except docker.errors.APIError as exc:
            if "unable to freeze" not in str(exc) or attempt == PAUSE_TRIES:
                raise
            print(f"docker pause of {container.name}: {exc.explanation}; trying again")
            time.sleep(0.2)


def fault_kinds(rng: random.Random) -> Iterator[str]:
    """Every kind once a round, in a random order: each invariant is checked within the first
    round, and a long run spreads its faults evenly over the kinds."""
    while True:
        yield from rng.sample(KINDS, len(KINDS))


def test_chaos_random_faults_heal_into_a_full_mesh(chaos_mesh, record_figure):
    mesh = chaos_mesh
    seed = int(os.environ.get("MESH_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed: {seed} (MESH_CHAOS_SEED={seed} replays the same choices)")
    rng = random.Random(seed)
    kinds = fault_kinds(rng)
    tally = Tally()
    history: list[str] = []

    ids = mesh.wait_for_full_mesh(NODES)
    nodes = mesh.nodes()
    started = time.monotonic()
    try:
        while time.monotonic() - started < SECONDS or sum(tally.faults.values()) < len(KINDS):
            kind = next(kinds)
            victim = rng.choice(nodes) if kind in NODE_FAULTS else mesh.distributor
            duration = rng.uniform(SHORTEST, LONGEST)
            fault = Fault(mesh, kind, victim)
            history.append(f"{fault} for {duration:.1f} s")
            cycle_started = time.monotonic()
            ids = _one_fault(mesh, nodes, ids, fault, duration, tally)
            tally.faults[kind] += 1
            tally.spent[kind] += time.monotonic() - cycle_started
    except pytest.fail.Exception as exc:
        tally.failure = str(exc).splitlines()[0]
        pytest.fail(f"{exc}\nchaos seed {seed}; the faults, the last one failing: {history}")
    finally:
        print("\n".join(tally.table(seed, time.monotonic() - started)))
    tally.record(record_figure, seed)  # every check passed: a failure ends the test above
    unchecked = [what for what in INVARIANTS if tally.checks[what] == 0]
    assert not unchecked, f"invariants never checked: {unchecked}"
    if SECONDS >= RATE_ASSERTED_FROM:
        assert sum(tally.faults.values()) >= MIN_FAULTS, (
            f"{sum(tally.faults.values())} faults in {SECONDS:.0f} s, fewer than {MIN_FAULTS} "
            f"({FAULTS_PER_MINUTE} a minute)"
        )


def _one_fault(
    mesh: Mesh,
    nodes: list[Replica],
    ids: dict[str, str],
    fault: Fault,
    duration: float,
    tally: Tally,
) -> dict[str, str]:
    """Injects the fault, holds it for `duration` and heals it, sampling that the links among
    the untouched nodes never close; then waits for the full mesh of all nodes again.
    Returns container name -> node id (a killed node comes back with a new id)."""
    untouched = [n for n in nodes if n is not fault.victim]
    untouched_ids = {n.container.name: ids[n.container.name] for n in untouched}
    links = mesh.wait_until(
        lambda: mesh.peer_links(untouched, untouched_ids), "every link is connected"
    )
    kept = KEPT[fault.kind in DISTRIBUTOR_FAULTS]

    def links_unchanged() -> str | None:
        tally.checks[kept] += 1
        return mesh.links_problem(untouched, untouched_ids, links)

    fault.inject()
    try:
        mesh.hold(duration, links_unchanged, f"while {fault}: every link of the untouched nodes")
    finally:
        fault.heal()
    healed = time.monotonic()
    new_ids, seen_at = _healed(mesh, nodes, f"after {fault} healed", links_unchanged, tally)
    took = time.monotonic() - healed
    settled = healed + HEARTBEAT_TIMEOUT + SETTLE_SLACK
    if fault.kind in NODE_FAULTS and seen_at < settled:
        # A link of the victim that looks whole may still die of the fault: TCP resends what
        # a partition dropped only when its backoff says so, which can be after the heartbeat
        # timeout. Let that happen (the others' links still sampled), then the mesh again. A
        # full mesh first seen after that (a restarted node is often slower) was seen settled.
        if (settle := settled - time.monotonic()) > 0:
            mesh.hold(settle, links_unchanged, f"after {fault}: the untouched nodes' links")
        new_ids, _ = _healed(mesh, nodes, f"after {fault} settled", links_unchanged, tally)
    tally.healed_in[fault.kind] = max(took, tally.healed_in.get(fault.kind, 0.0))
    return new_ids


def _healed(
    mesh: Mesh,
    nodes: list[Replica],
    when: str,
    links_unchanged: Callable[[], str | None],
    tally: Tally,
) -> tuple[dict[str, str], float]:
    """Waits until every node sees every other (FULL_MESH), then until the distributor lists
    every node (LISTED), sampling `links_unchanged` all along; counts each invariant when it
    holds. Returns container name -> node id, and when the full mesh was first seen (the
    start of the look that saw it, monotonic)."""
    ids = mesh.node_ids(nodes)  # waits until every node answers again
    expected = set(ids.values())
    seen_at = 0.0

    def every_node_sees_every_other() -> bool:
        nonlocal seen_at
        seen_at = time.monotonic()
        if problem := mesh.mesh_problem(nodes, ids):
            raise NotYet(problem)
        return True

    def the_distributor_lists_every_node() -> bool:
        if (listed := mesh.member_ids()) != expected:
            raise NotYet(f"the distributor lists {listed}, expected {expected}")
        return True

    mesh.wait_until(
        every_node_sees_every_other,
        f"{when}: each of {NODES} nodes sees every other",
        invariant=links_unchanged,
    )
    tally.checks[FULL_MESH] += 1
    mesh.wait_until(
        the_distributor_lists_every_node,
        f"{when}: the distributor lists all {NODES} nodes",
        invariant=links_unchanged,
    )
    tally.checks[LISTED] += 1
    return ids, seen_at
