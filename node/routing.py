"""Which provider of a service, or which instance, gets a routed request. Pure: no sockets,
no clock.

The node passes in the eligible providers (not draining, link `connected`, not yet
tried for this request) with their requests in flight; the one with the fewest
gets it, round-robin among equals, so an idle mesh spreads calls evenly and a slow
provider (its requests pile up) gets fewer of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from shared.wire import Instance

TRIES = 3  # a routed request goes to at most this many providers


class ProviderPicker:
    def __init__(self) -> None:
        self._turns: dict[str, int] = {}  # service -> requests routed so far

    def pick(self, service: str, in_flight: Mapping[str, int]) -> str | None:
        """The member id (a key of `in_flight`: id -> requests in flight) to call, or None."""
        if not in_flight:
            return None
        fewest = min(in_flight.values())
        equals = sorted(member_id for member_id, count in in_flight.items() if count == fewest)
        turn = self._turns.get(service, 0)
        self._turns[service] = turn + 1
        return equals[turn % len(equals)]


def healthiest(health: Mapping[str, str]) -> list[str]:
    """The keys (of `health`: instance key -> passing, warning or critical) the gateway may
    choose from: the passing ones, or the warning ones when none passes; never critical."""
    for wanted in ("passing", "warning"):
        keys = [key for key, state in health.items() if state == wanted]
        if keys:
            return keys
    return []


def instance_key(agent_id: str, instance: Instance) -> str:
    """How answers name an instance (X-Mesh-Instance): `<agent id>/<instance id>`."""
    return f"{agent_id}/{instance.id}"


class AgentRecord(Protocol):
    """What the choice reads of an agent: a member record has it."""

    @property
    def id(self) -> str: ...
    @property
    def draining(self) -> bool: ...
    @property
    def instances(self) -> tuple[Instance, ...]: ...


class Agent(NamedTuple):
    """This node as an agent, without making its whole record on every request."""

    id: str
    draining: bool
    instances: tuple[Instance, ...]


def routable_instances(
    service: str, records: Iterable[tuple[AgentRecord, bool]]
) -> dict[str, tuple[Instance, str]]:
    """The instances of `service` the gateway may send to, by key: (instance, health).

    `records` are the agents with whether each is reachable (this node itself, or a peer
    whose link is connected). An instance is left out when critical, or when its agent is
    unreachable or draining: the agent is the one that knows it is healthy.
    """
    found: dict[str, tuple[Instance, str]] = {}
    for record, reachable in records:
        if not reachable or record.draining:
            continue
        for instance in record.instances:
            if instance.service == service and instance.health != "critical":
                found[instance_key(record.id, instance)] = (instance, instance.health)
    return found
