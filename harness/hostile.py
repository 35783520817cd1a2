"""Hostile input that both the fuzzer (bench/fuzz.py) and the tests send."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

# values no field of a message should hold
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    0.5,
    -0.0,
    1e308,
    2**53,
    2**63,
    2**64 - 1,
    -(2**63),
    "",
    "x" * 300,
    [],
    {},
    [[[[[]]]]],
    {"type": "hello"},
    "127.0.0.1:99999",
    "[::1",
]


def tls_client_hello() -> bytes:
    """The first bytes a TLS client sends: another protocol at our port."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="mesh")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()
