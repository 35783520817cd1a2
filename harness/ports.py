"""Free ports on this machine, never the same one twice in a process."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()
# the kernel's picks are spread over the ephemeral range, so repeats are rare
_ATTEMPTS = 1000


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, and one this process was never handed before.

    The kernel picks it (bind to port 0); the probe socket is closed before the caller
    binds, so the kernel may pick the same port again for the next call: two calls used
    to give a node's mesh and HTTP ports the same number. Every port handed out is
    remembered, and a repeat is asked for again. (Another process may still take the
    port in between; nothing short of passing the bound socket on prevents that.)
    `host` "0.0.0.0" finds one free on every address.
    """
    with _lock:
        for _ in range(_ATTEMPTS):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no port on {host} that this process was not handed already")
