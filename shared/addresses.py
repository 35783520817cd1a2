"""Addresses: host:port (IPv6 bracketed), ports, and host names to dial."""

from __future__ import annotations

from typing import Any

from shared.fields import ProtocolError, text_field

MAX_ADDRESS = 300
MAX_HOST = 253  # a host name (RFC 1035) or an IP address


def is_port(text: str, *, zero: bool = False) -> bool:
    """A TCP port in ASCII digits: 1..65535, or 0 too when `zero` (listen anywhere)."""
    return text.isascii() and text.isdigit() and (0 if zero else 1) <= int(text) < 65536


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError when malformed.

    An IPv6 host must be bracketed, or its last group would read as the port.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError(f"{text!r} is not HOST:PORT")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{text!r} is not HOST:PORT (bracket an IPv6 host: [::1]:9010)")
    if not sep or not host or not is_port(port):
        raise ValueError(f"{text!r} is not HOST:PORT")
    try:
        host.encode("idna")  # what the resolver will need: labels of 1..63 characters
    except UnicodeError:
        raise ValueError(f"{text!r} has a host name no resolver accepts") from None
    return host, int(port)


def host_name(value: Any, what: str) -> str:
    """A host to dial (a name or an IP address, no port); ValueError says what is wrong."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_HOST:
        raise ValueError(f"{what} must be a host name or an IP address")
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if not host or any(c.isspace() or c in "/[]@?#" for c in host):
        raise ValueError(f"{what} {value!r} is not a host name or an IP address")
    try:
        host.encode("idna")  # what the resolver will need: labels of 1..63 characters
    except UnicodeError:
        raise ValueError(f"{what} {value!r} has a host name no resolver accepts") from None
    return host


def address_field(obj: dict[str, Any], key: str) -> str:
    value = text_field(obj, key, MAX_ADDRESS)
    try:
        parse_address(value)
    except ValueError:
        raise ProtocolError(f"field {key!r} must be host:port") from None
    return value


__all__ = [
    "MAX_ADDRESS",
    "MAX_HOST",
    "address_field",
    "host_name",
    "is_port",
    "parse_address",
]
