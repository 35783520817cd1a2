"""The harness: free_port never hands out one port twice in a process, and the tests take
what they share with the benchmarks from harness/, never from bench/."""

from __future__ import annotations

import ast
import socket

from harness import ports
from harness.ports import free_port
from harness.procs import ROOT


class ScriptedProbe:
    """What socket.socket() gives while the kernel is scripted: a probe bound to a set port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> ScriptedProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_the_kernel_picks_again_is_not_handed_out_again(monkeypatch):
    # the kernel may pick a port again once the probe is closed: here it does, at once
    picks = iter([5, 5, 6])
    monkeypatch.setattr(socket, "socket", lambda *args: ScriptedProbe(next(picks)))
    monkeypatch.setattr(ports, "_handed_out", set(), raising=False)  # no earlier tests' ports
    assert [free_port(), free_port()] == [5, 6]


def test_many_ports_are_all_different():
    # without memory, 500 picks from the ephemeral range repeat one almost every time
    handed = [free_port() for _ in range(500)]
    assert len(set(handed)) == len(handed)


def test_a_handed_out_port_is_free_to_bind():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_no_test_imports_the_benchmarks():
    """What tests and benchmarks share lives in harness/: a test never loads bench/."""
    tests = ROOT / "tests"
    importers = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(m == "bench" or m.startswith("bench.") for m in modules):
                importers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not importers
