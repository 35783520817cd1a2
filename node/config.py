"""The node's command line; every flag falls back to its MESH_* variable."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from node.definitions import ServiceDefinition, parse_services_file
from shared.config import (
    ArgumentParser,
    ConfigError,
    ServerConfig,
    add_common_flags,
    common_config,
    port_number,
    split_address,
)
from shared.wire import (
    MAX_INSTANCES,
    MAX_NAME,
    MAX_SERVICES,
    MAX_TAGS,
    Instance,
    Member,
    check_record_size,
    labels,
    meta_pairs,
)

DEFAULT_PORT = 9010
DEFAULT_HTTP_PORT = 9110
DEFAULT_DISTRIBUTOR = "distributor:9000"


@dataclass(frozen=True, slots=True)
class NodeConfig(ServerConfig):
    name: str
    advertise_host: str | None
    distributors: tuple[str, ...]  # HOST:PORT as given
    seeds: tuple[str, ...] = ()  # HOST:PORT of nodes to join through, ids unknown
    services: tuple[str, ...] = ()  # --service: service names this node provides
    tags: tuple[str, ...] = ()  # --tag: free labels
    meta: tuple[tuple[str, str], ...] = ()  # --meta KEY=VALUE: a string map
    # --instances-file: services outside the node (any language) it registers and checks
    instances: tuple[ServiceDefinition, ...] = ()
    gateway_port: int = 0  # --gateway-port: users' HTTP to instances by service; 0: off


def _address(text: str) -> str:
    try:
        split_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse(argv: list[str], env: Mapping[str, str]) -> NodeConfig:
    parser = ArgumentParser(prog="node", description="A mesh member.")
    add_common_flags(parser, env, port=DEFAULT_PORT, http_port=DEFAULT_HTTP_PORT)
    parser.add_argument(
        "--name",
        default=env.get("MESH_NAME") or socket.gethostname(),
        help="this node's name (default: the hostname)",
    )
    parser.add_argument(
        "--advertise-host",
        default=env.get("MESH_ADVERTISE_HOST") or None,
        help="the address other nodes dial (default: worked out)",
    )
    parser.add_argument(
        "--distributor",
        action="append",
        type=_address,
        dest="distributors",
        metavar="HOST:PORT",
        help=f"a distributor to register with, repeatable (default: {DEFAULT_DISTRIBUTOR})",
    )
    parser.add_argument(
        "--seed",
        action="append",
        type=_address,
        dest="seeds",
        metavar="HOST:PORT",
        help="a node to join the mesh through, repeatable (env MESH_SEEDS)",
    )
    parser.add_argument(
        "--service",
        action="append",
        dest="services",
        metavar="NAME",
        help="a service this node provides, repeatable (env MESH_SERVICES, comma-separated)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        dest="tags",
        metavar="TAG",
        help="a free label (v2, canary, zone-a), repeatable (env MESH_TAGS, comma-separated)",
    )
    parser.add_argument(
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        help="a string to publish under KEY, repeatable (env MESH_META, comma-separated pairs)",
    )
    parser.add_argument(
        "--instances-file",
        metavar="PATH",
        default=env.get("MESH_INSTANCES_FILE") or None,
        help="services to register at start, as Consul's service definitions: "
        '{"service": {...}} or {"services": [...]} (env MESH_INSTANCES_FILE)',
    )
    parser.add_argument(
        "--gateway-port",
        type=port_number,
        default=env.get("MESH_GATEWAY_PORT") or "0",
        help="serve users' HTTP on this port, routed to a healthy instance by the first path "
        "segment: /<service>/... (env MESH_GATEWAY_PORT; default 0: off)",
    )
    args = parser.parse_args(argv)
    if args.distributors is None:
        # MESH_DISTRIBUTORS set and empty means no distributor at all
        args.distributors = _env_addresses(env, "MESH_DISTRIBUTORS", DEFAULT_DISTRIBUTOR)
    if args.seeds is None:
        args.seeds = _env_addresses(env, "MESH_SEEDS", "")
    if not 0 < len(args.name) <= MAX_NAME:
        raise ConfigError(f"--name must be 1..{MAX_NAME} characters")
    # a flag replaces its variable's list, never adds to it
    services = args.services if args.services is not None else _env_list(env, "MESH_SERVICES")
    tags = args.tags if args.tags is not None else _env_list(env, "MESH_TAGS")
    meta = args.meta if args.meta is not None else _env_list(env, "MESH_META")
    try:
        record = Member(
            "id",
            args.name,
            "host:1",
            services=labels(services, "--service", MAX_SERVICES),
            tags=labels(tags, "--tag", MAX_TAGS),
            meta=meta_pairs(_meta_map(meta)),
        )
        check_record_size(record)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    instances = _instances_file(args.instances_file)
    _check_size_with(record, instances)
    return NodeConfig(
        **common_config(args, env),
        name=args.name,
        advertise_host=args.advertise_host,
        distributors=tuple(dict.fromkeys(args.distributors)),
        seeds=tuple(dict.fromkeys(args.seeds)),
        services=record.services,
        tags=record.tags,
        meta=record.meta,
        instances=instances,
        gateway_port=args.gateway_port,
    )


def _check_size_with(record: Member, definitions: tuple[ServiceDefinition, ...]) -> None:
    """The record with its instances must fit (MAX_RECORD_WITH_INSTANCES), as a registration
    over HTTP must; an address left out counts as a long IPv6 one."""
    placeholder = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    instances = tuple(
        Instance(d.id, d.name, d.address or placeholder, d.port, d.tags, d.meta, "critical")
        for d in definitions
    )
    try:
        check_record_size(replace(record, instances=instances))
    except ValueError as exc:
        raise ConfigError(f"--instances-file: {exc}") from None


def _instances_file(path: str | None) -> tuple[ServiceDefinition, ...]:
    """The definitions in --instances-file (none without one); a later id replaces an
    earlier one, as a registration does."""
    if path is None:
        return ()
    try:
        with open(path, "rb") as file:
            doc = orjson.loads(file.read())
        definitions = parse_services_file(doc)
    except OSError as exc:
        raise ConfigError(f"cannot read --instances-file {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--instances-file {path} is not JSON: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--instances-file {path}: {exc}") from None
    by_id = {definition.id: definition for definition in definitions}
    if len(by_id) > MAX_INSTANCES:
        raise ConfigError(f"--instances-file {path}: at most {MAX_INSTANCES} instances a node")
    return tuple(by_id.values())


def _env_list(env: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def _meta_map(items: list[str]) -> dict[str, str]:
    """KEY=VALUE items -> a map; `k=v=w` gives k the value `v=w`."""
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--meta {item!r} is not KEY=VALUE")
        if key in meta:
            raise ValueError(f"--meta: the key {key!r} is given twice")
        meta[key] = value
    return meta


def _env_addresses(env: Mapping[str, str], name: str, default: str) -> list[str]:
    addresses = [item.strip() for item in env.get(name, default).split(",") if item.strip()]
    for address in addresses:
        try:
            split_address(address)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return addresses
