"""The harness: free_port never hands out one port twice, nor one the kernel picks; and the
tests take what they share with the benchmarks from harness/, never from bench/."""

from __future__ import annotations

import ast
import socket

from harness import ports
from harness.ports import free_port
from harness.procs import ROOT


def test_a_port_is_never_one_the_kernel_could_hand_out_itself():
    # a bind to port 0 and every outgoing connection take their port from this range: a
    # port from it, closed again, could be given to one of them before its program binds
    low, high = ports.ephemeral_range()
    handed = [free_port() for _ in range(50)]
    assert not [port for port in handed if low <= port <= high]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert low <= sock.getsockname()[1] <= high  # the range read is the kernel's


def test_a_port_held_on_any_address_is_not_handed_out():
    taken = socket.socket()
    port = free_port()
    taken.bind(("0.0.0.0", port + 1))  # the next one in line, held on every address
    try:
        assert free_port() != port + 1
    finally:
        taken.close()


def test_many_ports_are_all_different():
    # without memory, 500 picks from the ephemeral range repeat one almost every time
    handed = [free_port() for _ in range(500)]
    assert len(set(handed)) == len(handed)


def test_a_handed_out_port_is_free_to_bind():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_no_test_imports_the_benchmarks():
    """What tests and benchmarks share lives in harness/: a test never loads bench/, but for
    the tests of the benchmarks' own logic (test_bench_*.py)."""
    tests = ROOT / "tests"
    importers = []
    for path in sorted(tests.rglob("*.py")):
        if path.name.startswith("test_bench_"):
            continue
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
