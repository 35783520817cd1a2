"""The node as an agent: the instances it registered (services outside its process, in any
language), their checks, and how Consul's agent endpoints show them.

The node puts `instances()` in its record; every change here (a registration, a
deregistration, a check that changes an instance's health) calls `on_change`, and the
node announces its new record, so the mesh knows each instance's health without asking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from node.checker import Checker
from node.checks import CheckState, worst
from node.definitions import CheckDefinition, ServiceDefinition
from shared.wire import MAX_INSTANCES, Instance

log = structlog.get_logger()


class Agent:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._definitions: dict[str, ServiceDefinition] = {}  # instance id -> definition
        self.checker = Checker(self._health_changed, self._expired)
        # (host, instances): the record's instances, made again only after a change (the
        # gateway reads them on every request)
        self._made: tuple[str, tuple[Instance, ...]] | None = None

    def check_room(self, definition: ServiceDefinition) -> None:
        """ValueError when `definition` is a new id beyond MAX_INSTANCES (a known id replaces)."""
        if definition.id not in self._definitions and len(self._definitions) >= MAX_INSTANCES:
            raise ValueError(f"at most {MAX_INSTANCES} instances on one node")

    def register(self, definition: ServiceDefinition) -> None:
        """Add an instance, or replace the one with its id (its checks start anew)."""
        self.check_room(definition)
        replaced = definition.id in self._definitions
        self._definitions[definition.id] = definition
        self.checker.add(definition.id, definition.checks, time.monotonic())
        self._made = None
        log.info(
            "instance_registered",
            instance=definition.id,
            service=definition.name,
            port=definition.port,
            replaced=replaced,
        )
        self._on_change()

    def deregister(self, instance_id: str) -> bool:
        """Remove an instance and stop its checks; False when there is none by that id."""
        if self._definitions.pop(instance_id, None) is None:
            return False
        self.checker.remove(instance_id)
        self._made = None
        log.info("instance_deregistered", instance=instance_id)
        self._on_change()
        return True

    def instances(self, host: str, extra: ServiceDefinition | None = None) -> tuple[Instance, ...]:
        """The instances as the record carries them; an address left out is `host` (the
        node's advertise host). With `extra`: as they would be once it is registered."""
        if extra is None and self._made is not None and self._made[0] == host:
            return self._made[1]
        definitions = dict(self._definitions)
        if extra is not None:
            definitions[extra.id] = extra
        made = tuple(
            Instance(
                d.id,
                d.name,
                d.address or host,
                d.port,
                d.tags,
                d.meta,
                self.checker.health(d.id) if d.id in self._definitions else initial_health(d),
            )
            for d in definitions.values()
        )
        if extra is None:
            self._made = (host, made)
        return made

    # -- Consul's agent endpoints ----------------------------------------------------

    def services_view(self, host: str, datacenter: str) -> dict[str, Any]:
        """GET /v1/agent/services: instance id -> Consul's AgentService."""
        return {
            instance.id: {
                "ID": instance.id,
                "Service": instance.service,
                "Tags": list(instance.tags),
                "Meta": dict(instance.meta),
                "Address": instance.address,
                "Port": instance.port,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
                "Datacenter": datacenter,
            }
            for instance in self.instances(host)
        }

    def checks_view(self, node_name: str) -> dict[str, Any]:
        """GET /v1/agent/checks: check id -> Consul's HealthCheck, with its last output."""
        view: dict[str, Any] = {}
        for definition in self._definitions.values():
            states = self.checker.states(definition.id)
            for check, state in zip(definition.checks, states, strict=True):
                view[check.check_id] = check_document(node_name, definition, check, state)
        return view

    # -- the checker's callbacks -----------------------------------------------------

    def _health_changed(self, instance_id: str) -> None:
        self._made = None
        log.info("instance_health", instance=instance_id, health=self.checker.health(instance_id))
        self._on_change()

    def _expired(self, instance_id: str) -> None:
        """Critical for its DeregisterCriticalServiceAfter: removed, as Consul's reaper does."""
        log.warning("instance_critical_too_long", instance=instance_id)
        self.deregister(instance_id)

    async def run(self) -> None:
        """Run the checks until cancelled."""
        await self.checker.run()


def initial_health(definition: ServiceDefinition) -> str:
    """An instance's health before any check has run: the worst initial status (Consul's
    default is critical); with no check at all, passing."""
    return worst(check.status for check in definition.checks)


def check_document(
    node_name: str, definition: ServiceDefinition, check: CheckDefinition, state: CheckState
) -> dict[str, Any]:
    return {
        "Node": node_name,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": state.status,
        "Notes": "",
        "Output": state.output,
        "ServiceID": definition.id,
        "ServiceName": definition.name,
        "ServiceTags": list(definition.tags),
        "Type": check.kind,
        "Interval": f"{check.interval:g}s",
        "Timeout": f"{check.timeout:g}s",
        "Definition": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }
