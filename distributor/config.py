"""The distributor's command line; every flag falls back to its MESH_* variable."""

from __future__ import annotations

from collections.abc import Mapping

from shared.config import ArgumentParser, ServerConfig, add_common_flags, common_config

DEFAULT_PORT = 9000
DEFAULT_HTTP_PORT = 9100


DistributorConfig = ServerConfig


def parse(argv: list[str], env: Mapping[str, str]) -> DistributorConfig:
    parser = ArgumentParser(
        prog="distributor", description="The mesh's registry: nodes register here."
    )
    add_common_flags(parser, env, port=DEFAULT_PORT, http_port=DEFAULT_HTTP_PORT)
    return DistributorConfig(**common_config(parser.parse_args(argv), env))
