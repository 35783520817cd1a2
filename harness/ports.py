"""Free ports on this machine, never the same one twice, and never one the kernel hands out.

A port the kernel picks (a bind to port 0) comes from its ephemeral range, and so does the
local port of every outgoing connection and of every other bind to port 0 (a node started
with `--port 0`, aiohttp's test server, a node dialling its peers). A port picked there and
closed again could be handed out by the kernel a second time before the program it was
meant for binds it. So the ports come from outside that range, where the kernel never
picks: no bind to 0 and no outgoing connection can take one in between.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

_handed_out: set[int] = set()
_lock = threading.Lock()
_cursor: int | None = None  # where the next search starts, in _span()
_LINUX_EPHEMERAL = (32768, 60999)  # the kernel's default ip_local_port_range
_LOWEST = 10000  # below this: well-known and registered services' ports
_MIN_SPAN = 2000  # fewer free ports than this below the range: take those above it


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (a bind to 0, an outgoing connection)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return _LINUX_EPHEMERAL
    return low, high


def _span() -> range:
    low, high = ephemeral_range()
    if low - _LOWEST >= _MIN_SPAN:
        return range(_LOWEST, low)
    return range(high + 1, 65536)


def _bindable(host: str, port: int) -> bool:
    """Whether nothing holds `port` on `host`, nor on any address (a program may bind all)."""
    for address in dict.fromkeys((host, "0.0.0.0")):
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, outside the kernel's ephemeral range, and one
    this process was never handed before.

    Each process starts its search at a place of its own (by its pid), so two processes
    that look at once (a benchmark and a test run) do not walk the same ports.
    """
    global _cursor
    span = _span()
    with _lock:
        if _cursor is None:
            _cursor = (os.getpid() * 7919) % len(span)
        for _ in range(len(span)):
            port = span[_cursor % len(span)]
            _cursor += 1
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port on {host} in {span.start}-{span.stop - 1}")
