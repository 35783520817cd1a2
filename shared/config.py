"""Configuration both programs share: flags with MESH_* fallbacks, and tuning.

Every flag has an environment variable and the flag wins. Tuning is by
environment only. A bad value is a start-up error: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import math
import re
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NoReturn

from shared.wire import is_port, parse_address


class ConfigError(Exception):
    """A start-up error; the message is the one line the user sees."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one clear line, not argparse's usage block
        raise ConfigError(message)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ConfigError when malformed."""
    try:
        return parse_address(address)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_number(text: str) -> int:
    if not is_port(text, zero=True):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


DNS_NAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

MIN_FRAME = 4096  # a hello, a heartbeat and an error frame must always fit

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_common_flags(
    parser: argparse.ArgumentParser, env: Mapping[str, str], *, port: int, http_port: int
) -> None:
    """The flags both programs take, with their MESH_* fallbacks."""

    def default(name: str, fallback: object) -> object:
        return env.get(name, fallback)

    parser.add_argument("--host", default=default("MESH_HOST", "0.0.0.0"), help="listener address")
    parser.add_argument(
        "--port", type=port_number, default=default("MESH_PORT", str(port)), help="listener port"
    )
    parser.add_argument(
        "--http-host",
        default=default("MESH_HTTP_HOST", None),
        help="HTTP address (default: --host)",
    )
    parser.add_argument(
        "--http-port",
        type=port_number,
        default=default("MESH_HTTP_PORT", str(http_port)),
        help="HTTP port",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default("MESH_LOG_LEVEL", "info").lower(),
        help="log level",
    )
    parser.add_argument(
        "--dns-port",
        type=port_number,
        default=default("MESH_DNS_PORT", "0"),
        help="answer DNS (UDP and TCP) on the HTTP host at this port (default 0: off)",
    )
    parser.add_argument(
        "--dns-domain",
        default=default("MESH_DNS_DOMAIN", "mesh"),
        help="the DNS domain: <service>.service.<domain> (default: mesh)",
    )
    parser.add_argument(
        "--datacenter",
        default=default("MESH_DATACENTER", "dc1"),
        help="the datacenter the Consul view names (default: dc1)",
    )
    parser.add_argument(
        "--secret-file",
        metavar="PATH",
        help="the mesh secret: links authenticate with it (env MESH_SECRET_FILE or MESH_SECRET)",
    )
    parser.add_argument(
        "--http-token-file",
        metavar="PATH",
        help="HTTP bearer token for every endpoint but the probes /healthz and /readyz "
        "(env MESH_HTTP_TOKEN_FILE or MESH_HTTP_TOKEN)",
    )


def _read_secret(
    path: str | None, env: Mapping[str, str], file_var: str, value_var: str
) -> str | None:
    """A secret from a file (stripped) or from the variable itself; both at once is an error."""
    path = path or env.get(file_var) or None
    value = env.get(value_var) or None
    if path and value:
        raise ConfigError(f"give {file_var} (or its flag) or {value_var}, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                value = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ConfigError(f"the secret in {path or value_var} is empty")
    return value


TLS_VARIABLES = ("MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_TLS_CA")


@dataclass(frozen=True, slots=True)
class Tls:
    """Mutual TLS with one private CA, on the mesh and distributor ports.

    Every listener asks for a client certificate and every dialer checks the listener's,
    both against MESH_TLS_CA. Host names are not checked: members dial each other by
    address (a container's IP), and a member's certificate says "signed by our CA", not
    which address it has; the secret's challenge (if set) still binds a link to both ids.
    scripts/test-ca.sh makes such a CA and a certificate.
    """

    server: ssl.SSLContext  # our listener: presents our certificate, requires the peer's
    client: ssl.SSLContext  # our dials: present our certificate, check the listener's

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tls | None:
        """The contexts, or None when no MESH_TLS_* variable is set (plain TCP)."""
        given = {name: env.get(name, "").strip() for name in TLS_VARIABLES}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigError(f"TLS needs all of {', '.join(TLS_VARIABLES)}; {missing[0]} is unset")
        cert, key, ca = given.values()
        try:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
            server.verify_mode = ssl.CERT_REQUIRED
            server.load_cert_chain(cert, key)
            client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            client.check_hostname = False  # see the class's docstring
            client.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"cannot load the TLS files {cert}, {key}, {ca}: {exc}") from None
        return cls(server=server, client=client)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What both programs are configured with."""

    host: str
    port: int
    http_host: str
    http_port: int
    log_level: str
    http_token: str | None  # None: the HTTP API is open
    tuning: Tuning
    dns_port: int  # 0: no DNS
    dns_domain: str  # lower case, no dots at either end
    datacenter: str  # the Consul view's


def common_config(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """ServerConfig's fields from parsed common flags and the environment."""
    if args.log_level not in LOG_LEVELS:
        raise ConfigError(f"MESH_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    secret = _read_secret(args.secret_file, env, "MESH_SECRET_FILE", "MESH_SECRET")
    token = _read_secret(args.http_token_file, env, "MESH_HTTP_TOKEN_FILE", "MESH_HTTP_TOKEN")
    # with a secret and no token, an open HTTP API on every address would bypass the secret
    http_host = args.http_host or ("127.0.0.1" if secret and not token else args.host)
    domain = args.dns_domain.strip(".").lower()
    if not domain or not all(DNS_NAME_LABEL.fullmatch(label) for label in domain.split(".")):
        raise ConfigError(f"--dns-domain {args.dns_domain!r} is not a domain name")
    if not DNS_NAME_LABEL.fullmatch(args.datacenter):
        raise ConfigError(f"--datacenter {args.datacenter!r} must be a DNS label")
    return {
        "dns_port": args.dns_port,
        "dns_domain": domain,
        "datacenter": args.datacenter,
        "host": args.host,
        "port": args.port,
        "http_host": http_host,
        "http_port": args.http_port,
        "log_level": args.log_level,
        "http_token": token,
        "tuning": replace(
            Tuning.from_env(env),
            secret=secret.encode() if secret else None,
            tls=Tls.from_env(env),
        ),
    }


@dataclass(frozen=True, slots=True)
class Tuning:
    """Timing and limits, from MESH_* environment variables (seconds unless named)."""

    heartbeat_interval: float = 1.0  # a heartbeat each way on every link
    heartbeat_timeout: float = 3.0  # a link silent this long is dead, whatever TCP says
    handshake_timeout: float = 5.0  # no valid hello by then: the connection is closed
    # a TCP connect not done by then fails (a dead container's address, say): the next
    # retry comes sooner than after the handshake timeout
    connect_timeout: float = 1.0
    retry_base: float = 0.1  # first backoff step for distributor and peer retries
    retry_max: float = 5.0  # backoff cap for distributor and peer retries
    peer_retry_window: float = 30.0  # unreachable, unlisted members are forgotten after this
    request_timeout: float = 5.0  # default timeout of a node-to-node request
    max_inflight: int = 1024  # requests in flight on one peer link; beyond, 429
    max_frame: int = 1024 * 1024  # frame cap in bytes
    max_connections: int = 1024  # concurrent connections still in the handshake
    max_members: int = 10000  # distributor capacity
    max_watchers: int = 4096  # blocking queries and event streams held at once; beyond, 429
    # on SIGTERM, how long a node stays draining (routed requests go elsewhere) before it
    # leaves; 0: it leaves at once
    drain_seconds: float = field(default=0.0, metadata={"zero": True})
    # the gateway waits this long for an instance's response headers (then 504)
    gateway_timeout: float = 30.0
    dns_ttl: int = field(default=0, metadata={"zero": True})  # of every DNS answer
    # the mesh secret (--secret-file): every link proves it knows it; None: no authentication
    secret: bytes | None = field(default=None, repr=False, metadata={"env": False})
    # MESH_TLS_*: TLS on every link; None: plain TCP
    tls: Tls | None = field(default=None, repr=False, metadata={"env": False})

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        values: dict[str, float | int] = {}
        for spec in fields(cls):
            if not spec.metadata.get("env", True):
                continue  # not a MESH_* tuning variable
            name, fallback = spec.name, spec.default
            key = "MESH_" + name.upper()
            if key not in env:
                continue
            text = env[key].strip()
            try:
                value = type(fallback)(text)
            except ValueError:
                raise ConfigError(f"{key}={text!r} is not a number") from None
            zero = spec.metadata.get("zero", False)  # 0 allowed: "not at all"
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
                kind = "non-negative" if zero else "positive"
                raise ConfigError(f"{key}={text!r} must be a {kind} number")
            values[name] = value
        tuning = cls(**values)
        if tuning.max_frame < MIN_FRAME:
            raise ConfigError(f"MESH_MAX_FRAME must be at least {MIN_FRAME} bytes")
        if tuning.heartbeat_timeout < 2 * tuning.heartbeat_interval:
            raise ConfigError(
                f"MESH_HEARTBEAT_TIMEOUT ({tuning.heartbeat_timeout}) must be at least twice "
                f"MESH_HEARTBEAT_INTERVAL ({tuning.heartbeat_interval})"
            )
        return tuning
