"""The distributor's command line; every flag falls back to its MESH_* variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ArgumentParser, Tuning, add_common_flags

DEFAULT_PORT = 9000
DEFAULT_HTTP_PORT = 9100


@dataclass(frozen=True, slots=True)
class DistributorConfig:
    host: str
    port: int
    http_host: str
    http_port: int
    log_level: str
    tuning: Tuning


def parse(argv: list[str], env: Mapping[str, str]) -> DistributorConfig:
    parser = ArgumentParser(
        prog="distributor", description="The mesh's registry: nodes register here."
    )
    add_common_flags(parser, env, port=DEFAULT_PORT, http_port=DEFAULT_HTTP_PORT)
    args = parser.parse_args(argv)
    return DistributorConfig(
        host=args.host,
        port=args.port,
        http_host=args.http_host or args.host,
        http_port=args.http_port,
        log_level=args.log_level,
        tuning=Tuning.from_env(env),
    )
