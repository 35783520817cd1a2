"""HAProxy 2.6 finds the mesh's instances through its DNS (DESIGN.md, "Speaking Consul and
DNS"): `server-template` on `_hello._tcp.service.mesh` with `resolvers`, three Node.js apps
as the instances. HAProxy takes each server's address from the additional section (one A
for every SRV, two of them sharing a target here) and asks with EDNS for 8 KiB, so this is
the proof that those records and the size rules are right."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.waiting import holds, wait_for
from tests.integration.cluster import Cluster, full_mesh
from tests.integration.dig import dig
from tests.integration.test_instances import App, apps, instances, register

__all__ = ["apps"]  # the fixture, used below

HAPROXY = shutil.which("haproxy")
SLOTS = 5  # servers the template makes: more than the instances, as in real use

CONFIG = """\
global
    maxconn 256

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

resolvers mesh
    nameserver n1 127.0.0.1:{dns_port}
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold obsolete 0s
    hold nx 1s
    hold other 1s

frontend web
    bind 127.0.0.1:{port}
    default_backend hello

backend hello
    balance roundrobin
    server-template app {slots} _hello._tcp.service.mesh resolvers mesh \
resolve-prefer ipv4 init-addr none check inter 200ms
"""


class HAProxy:
    def __init__(self, tmp: Path, dns_port: int) -> None:
        assert HAPROXY is not None, "haproxy is needed (Debian's haproxy): make setup installs it"
        self.port = free_port()
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(CONFIG.format(dns_port=dns_port, port=self.port, slots=SLOTS))
        checked = subprocess.run(
            [HAPROXY, "-c", "-f", str(self.config)], capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.log = tmp / "haproxy.log"
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                [HAPROXY, "-f", str(self.config), "-db"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def instance(self) -> str | None:
        """Which app answered one request through HAProxy (None: HAProxy had none)."""
        assert self.popen.poll() is None, self.log.read_text()
        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/hello/x")
            resp = conn.getresponse()
            resp.read()
            return resp.getheader("X-Instance") if resp.status == 200 else None
        finally:
            conn.close()

    def spread(self, requests: int = 30) -> Counter[str | None]:
        return Counter(self.instance() for _ in range(requests))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[int], HAProxy]]:
    made: list[HAProxy] = []

    def make(dns_port: int) -> HAProxy:
        made.append(HAProxy(tmp_path, dns_port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()
    for proxy in made:
        print("--- haproxy (last lines) ---")
        print("\n".join(proxy.log.read_text(errors="replace").splitlines()[-20:]))


def test_haproxy_balances_over_the_instances_and_drops_a_critical_one(
    make_cluster: Callable[..., Cluster],
    apps: Callable[[str], App],
    haproxy: Callable[[int], HAProxy],
) -> None:
    cluster = make_cluster(steady=True)
    cluster.distributor()
    dns_port = free_port()
    n1 = cluster.node("n1", extra=["--dns-port", str(dns_port)])
    n2 = cluster.node("n2")
    wait_for("mesh", lambda: full_mesh([n1, n2]))
    hello = [apps(f"hello-{i}") for i in (1, 2, 3)]
    # two instances on n1 (two SRV records with one target), one on n2
    for app, agent in zip(hello, (n1, n1, n2), strict=True):
        assert register(agent, app.definition())[0] == 200
    names = {app.name for app in hello}
    wait_for("all passing", lambda: instances(n1) == dict.fromkeys(names, "passing"))
    srv = dig(dns_port, "_hello._tcp.service.mesh", "SRV", "+bufsize=8192")
    assert {port for port, _ in srv.srv()} == {app.port for app in hello}

    proxy = haproxy(dns_port)
    wait_for("HAProxy sends to all three", lambda: set(proxy.spread()) == names)
    # round robin over the three: every one gets its share
    spread = proxy.spread(60)
    assert set(spread) == names and min(spread.values()) >= 10, spread

    hello[0].fail_health()
    wait_for("hello-1 critical", lambda: instances(n1)["hello-1"] == "critical")
    rest = names - {"hello-1"}
    wait_for("HAProxy stops sending to hello-1", lambda: set(proxy.spread()) == rest)
    holds("HAProxy never sends to hello-1 again", lambda: proxy.instance() in rest, seconds=5)
    assert set(proxy.spread(40)) == rest

    # and it comes back once passing again
    hello[0].fail_health(False)
    wait_for("HAProxy sends to hello-1 again", lambda: set(proxy.spread()) == names)
