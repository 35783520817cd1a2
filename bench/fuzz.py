"""Fuzz a live cluster on loopback: random and mutated frames at every port (issue 6), and
DNS packets at every DNS port (issue 21; bench/dnsfuzz.py).

    python -m bench.fuzz --frames 1000000 [--dns-packets N] [--concurrency 64] [--seed 7]

Starts a distributor and three nodes as subprocesses (no secret), then fires
frames at their ports over many concurrent connections: random bytes, random
JSON, valid frames of every type, the same damaged (bytes flipped, inserted,
cut; fields given wrong types or huge values; lying length prefixes), garbage
of other protocols, and sessions that pass the hello as a ghost node and then
send hundreds of frames, valid and not. A few connections stall mid-frame and
must be cut by the handshake timeout. Every few seconds, and at the end, it
checks that every process is alive and the mesh whole; at the end, that the
ghosts are gone again. It prints frames per second, connections used and
crashes (processes that died, error log lines, raw tracebacks: expect 0).
Then (unless --dns-packets 0) DNS packets, valid and hostile, at every program's
--dns-port, after which every port must still answer over UDP and TCP.
Exit status 0 when there were no crashes and the mesh stayed whole, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import random
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bench.dnsfuzz import DnsForge, DnsTally, answering, fire_dns, report_line
from harness.hostile import HOSTILE_VALUES, tls_client_hello
from harness.ports import free_port
from harness.procs import Proc, clean_env, raise_nofile
from shared.framing import encode_frame
from shared.wire import (
    MESSAGE_TYPES,
    Auth,
    BrokenLink,
    Deltas,
    Departure,
    Error,
    Heartbeat,
    Hello,
    LinkReport,
    Member,
    MemberJoined,
    MemberLeft,
    Members,
    Message,
    Request,
    Response,
    Snapshot,
    Update,
)

NODES = 3
HANDSHAKE_TIMEOUT = 2.0  # stalled connections are cut after this
STALL_SHARE = 0.002  # of connections: send part of a frame, then wait to be cut
SESSION_SHARE = 0.3  # of connections: a valid hello first, then many frames
CHECK_EVERY = 2.0  # seconds between mesh checks while fuzzing
SETTLE = 30.0  # seconds the mesh gets, after the run, to be exactly the real one again
CLOSE_WAIT = 30.0  # seconds a server gets to close a connection we half-closed or stalled
# the cluster: default heartbeats (nothing may be dropped), short windows so ghosts clear
CLUSTER_ENV = {
    "MESH_HANDSHAKE_TIMEOUT": str(HANDSHAKE_TIMEOUT),
    "MESH_PEER_RETRY_WINDOW": "3",
    "MESH_RETRY_MAX": "1",
}

TEXT = 'abcdefghijklmnopqrstuvwxyz0123456789-_.:é✓𝄞\u2028\x00\n"\\ '
DEEP = "\x00deep\x00"  # replaced by JSON nested past what orjson writes


GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n",
    b"\x00" * 65536,
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xf0" + b"A" * 2048,
    b"SSH-2.0-OpenSSH_9.6\r\n",
    tls_client_hello(),
]


class Forge:
    """Frames, valid and hostile, from one seeded random source."""

    def __init__(self, rng: random.Random, ghost_address: str, pool: int = 4000) -> None:
        self.rng = rng
        self.ghost_address = ghost_address
        self.valid = [self._encode(self.message()) for _ in range(pool)]
        # what a session sends after its hello: anything but the frames that end a link
        self.session = [
            f for f in self.valid if not f[4:].startswith((b'{"type":"leave"', b'{"type":"error"'))
        ]

    # -- pieces --------------------------------------------------------------------

    def text(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choices(TEXT, k=self.rng.randint(lo, hi)))

    def count(self) -> int:
        return self.rng.choice([0, 1, 2, self.rng.randrange(2**53)])

    def json_value(self, depth: int = 0) -> Any:
        roll = self.rng.random()
        if depth < 4 and roll < 0.15:
            return [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if depth < 4 and roll < 0.3:
            return {
                self.text(0, 6): self.json_value(depth + 1) for _ in range(self.rng.randint(0, 4))
            }
        return self.rng.choice(
            [
                None,
                self.rng.random() < 0.5,
                self.rng.randint(-(2**63), 2**64 - 1),
                self.rng.uniform(-1e9, 1e9),
                self.text(0, 12),
            ]
        )

    def bad_value(self) -> Any:
        """A value no field should hold; a fresh copy (the lists and dicts get mutated)."""
        return copy.deepcopy(self.rng.choice(HOSTILE_VALUES))

    def member(self) -> Member:
        ghost = "ghost-" + self.rng.randbytes(6).hex()
        member = Member(ghost, self.text(1, 20), self.ghost_address, self.count())
        if self.rng.random() < 0.5:  # one that offers something (protocol version 2)
            rng = self.rng
            member = replace(
                member,
                http=self.ghost_address,
                services=tuple(rng.sample(["goods", "stock", "a.b-c_9"], rng.randint(0, 3))),
                tags=tuple(rng.sample(["v2", "canary", "zone-a"], rng.randint(0, 3))),
                meta=tuple((f"k{i}", self.text(0, 12)) for i in range(rng.randint(0, 3))),
                draining=rng.random() < 0.5,
            )
        return member

    def message(self, kind: type[Message] | None = None) -> Message:
        """A valid message of `kind` (any type when None), with random fields."""
        kind = kind or self.rng.choice(list(MESSAGE_TYPES.values()))
        rng, member = self.rng, self.member()
        if kind is Hello:
            return self.hello()
        if kind is Heartbeat:
            return Heartbeat(rng.choice(["", f"{rng.randint(0, 9)}:{rng.randbytes(8).hex()}"]))
        if kind is Snapshot:
            members = tuple(self.member() for _ in range(rng.randint(0, 3)))
            return Snapshot(self.text(1, 16), self.count(), members, rng.random() < 0.5)
        if kind is MemberJoined:
            return MemberJoined(self.count(), member)
        if kind is MemberLeft:
            return MemberLeft(self.count(), member, rng.choice(["leave", "closed", "timeout", "x"]))
        if kind is Deltas:
            first = self.count() % (2**53 - 1)
            return Deltas(first, (MemberJoined(first, member),))
        if kind is Request:
            method = rng.choice(["echo", "ping", "nope", self.text(1, 20)])
            return Request(self.count(), method, self.json_value())
        if kind is Response:
            error = rng.choice([None, self.text(0, 30)])
            return Response(self.count(), self.json_value(), error, rng.choice([None, "busy"]))
        if kind is Update:
            return Update(member)
        if kind is LinkReport:
            return LinkReport((BrokenLink(member.id, "retrying", rng.uniform(0, 2e9)),))
        if kind is Error:
            return Error(rng.choice(["bad_frame", "full", "auth_failed", "x"]), self.text(0, 40))
        if kind is Auth:
            return Auth(rng.randbytes(32).hex())
        if kind is Members:
            tombs = tuple(
                Departure("ghost-" + rng.randbytes(6).hex(), self.count(), rng.uniform(0, 100))
                for _ in range(rng.randint(0, 2))
            )
            return Members(tuple(self.member() for _ in range(rng.randint(0, 3))), tombs)
        return kind()  # Leave, SyncRequest: no fields

    def hello(self) -> Hello:
        """A ghost's hello; now and then with an id other connections use too (so
        registrations replace each other, refuse stale ones, pairs get two links)."""
        member = self.member()
        if self.rng.random() < 0.3:
            member = Member(f"ghost-shared-{self.rng.randrange(16)}", *astuple(member)[1:])
        nonce = self.rng.choice(["", self.rng.randbytes(32).hex()])
        return replace(Hello.of(member), nonce=nonce)

    def about(self, hello: Hello) -> bytes:
        """A frame about the sender itself: its own record changed, or a tombstone for it."""
        rng = self.rng
        me = replace(hello.member, incarnation=self.count(), name=self.text(1, 10))
        return self._encode(
            rng.choice(
                [
                    Members((me, *(self.member() for _ in range(rng.randint(0, 2))))),
                    Members((), (Departure(me.id, self.count(), rng.uniform(0, 100)),)),
                    MemberJoined(self.count(), me),
                    MemberLeft(self.count(), me, "leave"),
                    Snapshot(self.text(1, 8), self.count(), (me,)),
                    replace(hello, incarnation=self.count()),
                ]
            )
        )

    @staticmethod
    def _encode(message: Message) -> bytes:
        return encode_frame(message)

    @staticmethod
    def _frame(body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + body

    def _dumps(self, obj: Any) -> bytes:
        body = orjson.dumps(obj)
        marker = orjson.dumps(DEEP)
        if marker in body:  # deeper than orjson writes: spliced in by hand
            depth = self.rng.choice([253, 254, 255, 300, 1023, 1025])
            body = body.replace(marker, b"[" * depth + b"]" * depth)
        return body

    # -- hostile frames ------------------------------------------------------------

    def mutated(self) -> bytes:
        """A valid frame, damaged: bytes flipped, inserted or cut, a lying prefix, a bad field."""
        rng = self.rng
        data = bytearray(rng.choice(self.valid))
        how = rng.randrange(6)
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        elif how == 1:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif how == 2:
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 16)]
        elif how == 3:
            del data[rng.randrange(len(data)) :]  # truncated
        elif how == 4:
            data[:4] = struct.pack(">I", rng.choice([0, 1, len(data), 2**20, 2**20 + 1, 2**32 - 1]))
        else:
            obj = orjson.loads(bytes(data[4:]))
            key = rng.choice(sorted(obj))
            obj[key] = rng.choice([self.bad_value(), DEEP, self.json_value()])
            if isinstance(obj.get("member"), dict) and obj["member"] and rng.random() < 0.5:
                obj["member"][rng.choice(sorted(obj["member"]))] = self.bad_value()
            return self._frame(self._dumps(obj))
        return bytes(data)

    def hostile(self) -> bytes:
        """One frame (or not quite one) of any hostile kind."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return self.mutated()
        if roll < 0.5:
            return rng.choice(self.valid)
        if roll < 0.65:  # a known type, fields of the wrong shape
            obj = {k: rng.choice([self.bad_value(), self.json_value()]) for k in self._keys()}
            obj["type"] = rng.choice(list(MESSAGE_TYPES))
            return self._frame(self._dumps(obj))
        if roll < 0.75:
            return self._frame(self._dumps(self.json_value()))
        if roll < 0.8:
            return self._frame(self._dumps({"type": self.text(1, 12)}))
        if roll < 0.95:
            body = rng.randbytes(rng.randint(0, 200))
            return self._frame(body) if rng.random() < 0.7 else body
        return rng.choice(GARBAGE)

    def _keys(self) -> list[str]:
        keys = ["id", "name", "address", "incarnation", "version", "min_version", "nonce"]
        keys += ["digest", "epoch", "members", "last", "member", "reason", "method", "body"]
        keys += ["error", "code", "message", "proof", "tombstones"]
        return self.rng.sample(keys, self.rng.randint(0, 6))


# -- the cluster -------------------------------------------------------------------


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.ids: dict[str, str] = {}  # node name -> its id
        self.dns_ports: list[int] = []  # every program answers DNS (bench/dnsfuzz.py)

    def start(self, nodes: int) -> None:
        port = free_port()
        self._spawn("distributor", "distributor", port, [])
        for i in range(nodes):
            flags = ["--name", f"n{i}", "--distributor", f"127.0.0.1:{port}"]
            self._spawn(f"n{i}", "node", free_port(), flags)
        for proc in self.procs:
            proc.wait_healthy(SETTLE)
        for proc in self.nodes:
            self.ids[proc.name] = proc.get("/v1/status")["id"]
        end = time.monotonic() + SETTLE
        while not self.whole():
            if time.monotonic() > end:
                raise RuntimeError(f"the cluster did not mesh: {self.problem()}")
            time.sleep(0.1)

    def _spawn(self, name: str, module: str, port: int, flags: list[str]) -> None:
        http_port, dns_port = free_port(), free_port()
        args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
        args += ["--http-port", str(http_port), "--dns-port", str(dns_port), *flags]
        self.dns_ports.append(dns_port)
        log = self.workdir / f"{name}.log"
        self.procs.append(Proc(name, args, clean_env(CLUSTER_ENV), log, http_port, port).start())

    @property
    def distributor(self) -> Proc:
        return self.procs[0]

    @property
    def nodes(self) -> list[Proc]:
        return self.procs[1:]

    def exited(self) -> list[str]:
        return [
            f"{p.name} (exit {p.popen and p.popen.returncode})"
            for p in self.procs
            if not p.running()
        ]

    def problem(self, exact: bool = False) -> str | None:
        """Why the mesh is not whole (None when it is); `exact`: and no ghost is left."""
        try:
            if self.exited():
                return f"exited: {', '.join(self.exited())}"
            real = set(self.ids.values())
            registered = {m["id"] for m in self.distributor.get("/v1/members")["members"]}
            if not real <= registered or (exact and registered != real):
                listed, others = len(registered & real), len(registered - real)
                return f"the distributor lists {listed} of {len(real)} nodes, {others} others"
            for node in self.nodes:
                st = node.get("/v1/status")
                others = real - {self.ids[node.name]}
                connected = {p["id"] for p in st["peers"] if p["state"] == "connected"}
                if not others <= connected:
                    return (
                        f"{node.name} is linked to {len(others & connected)} of {len(others)} nodes"
                    )
                known = {m["id"] for m in st["members"]} | {p["id"] for p in st["peers"]}
                if exact and known != others:
                    return f"{node.name} still knows {len(known - others)} ghosts"
        except (OSError, ValueError, KeyError, AssertionError) as exc:  # or an answer not 200
            return f"could not ask: {exc!r}"
        return None

    def whole(self, exact: bool = False) -> bool:
        return self.problem(exact) is None

    def log_findings(self) -> dict[str, list[str]]:
        """Per process: error log lines and raw tracebacks (what a crash leaves behind)."""
        findings: dict[str, list[str]] = {}
        for proc in self.procs:
            lines = proc.log_path.read_text(errors="replace").splitlines()
            bad = [
                line[:300]
                for line in lines
                if line.startswith("Traceback")
                or '"level": "error"' in line
                or '"level": "critical"' in line
            ]
            if bad:
                findings[proc.name] = bad
        return findings

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(grace=5)


# -- firing ------------------------------------------------------------------------


@dataclass
class Tally:
    frames: int = 0
    hostile: int = 0  # random, mutated or garbage (the rest: valid frames in a session)
    reserved: int = 0  # frames workers have taken on, fired or not yet
    bytes: int = 0
    connections: int = 0
    sessions: int = 0
    stalls: int = 0
    stalls_cut: int = 0
    slowest_stall_cut: float = 0.0
    not_closed: int = 0  # connections the server never closed after our half-close
    connect_failures: int = 0
    lifetimes: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    mesh_checks: int = 0
    mesh_broken: list[str] = field(default_factory=list)


async def fire_one(forge: Forge, port: int, tally: Tally, budget: int) -> None:
    """One connection: a barrage, a session or a stall; then wait for the server to close."""
    rng = forge.rng
    roll = rng.random()
    stall = roll < STALL_SHARE
    sessions_before = tally.sessions
    hostile = 0  # of the frames below
    if stall:
        frames = [rng.choice([b"\x00\x00", forge.valid[0][:-3], b"\x00\x00\x00\x10{"])]
        hostile = 1
        tally.stalls += 1
    elif roll < STALL_SHARE + SESSION_SHARE:  # past the hello, then valid frames and a few not
        hello = forge.hello()
        frames = [encode_frame(hello)]
        for _ in range(rng.randint(20, 200)):
            roll = rng.random()
            hostile += roll < 0.03
            if roll < 0.03:
                frames.append(forge.hostile())
            elif roll < 0.06:
                frames.append(forge.about(hello))
            else:
                frames.append(rng.choice(forge.session))
        tally.sessions += 1
    else:  # hostile frames, after a valid hello now and then
        frames = [encode_frame(forge.hello())] if rng.random() < 0.3 else []
        frames += [forge.hostile() for _ in range(rng.randint(1, 20))]
        hostile = len(frames)
    frames = frames[:budget]
    tally.hostile += min(hostile, len(frames))
    kind = "stall" if stall else "session" if tally.sessions > sessions_before else "barrage"
    tally.reserved += len(frames)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tally.connect_failures += 1
        return
    tally.connections += 1
    started = time.monotonic()
    drain = asyncio.create_task(_read_until_closed(reader))
    data = b"".join(frames)
    tally.frames += len(frames)  # fired: the server may close before it reads them all
    tally.bytes += len(data)
    # a server that closes first makes writes fail (uvloop: RuntimeError on a closed handle)
    with contextlib.suppress(OSError, RuntimeError):
        if rng.random() < 0.05:  # in pieces, so the server's reads cut frames anywhere
            cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 8)))
            for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                if writer.is_closing():
                    break
                writer.write(data[a:b])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(data)
            await writer.drain()
        if not stall and not writer.is_closing():
            writer.write_eof()
    try:
        async with asyncio.timeout(CLOSE_WAIT):
            await drain
        tally.lifetimes.setdefault(kind, []).append(time.monotonic() - started)
        if stall:
            tally.stalls_cut += 1
            tally.slowest_stall_cut = max(tally.slowest_stall_cut, time.monotonic() - started)
    except TimeoutError:
        tally.not_closed += 1
    finally:
        drain.cancel()
        writer.transport.abort()


async def _read_until_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


async def fire(
    forge: Forge,
    ports: list[int],
    total: int,
    concurrency: int,
    tally: Tally,
    check: Callable[[], None],
) -> float:
    """Fire `total` frames over `concurrency` connections at a time; returns seconds taken."""
    started = time.monotonic()

    async def worker() -> None:
        while tally.reserved < total:
            await fire_one(forge, forge.rng.choice(ports), tally, total - tally.reserved)

    async def checker() -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            await asyncio.to_thread(check)

    checking = asyncio.create_task(checker())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
    return time.monotonic() - started


# -- the run -----------------------------------------------------------------------


def run(
    frames: int, concurrency: int, seed: int, nodes: int, keep: bool, dns_packets: int = 0
) -> dict[str, Any]:
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-fuzz-"))
    cluster = Cluster(workdir)
    # a port nothing listens on, held so no one else takes it: ghosts point there
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    rng = random.Random(seed)
    forge = Forge(rng, f"127.0.0.1:{dead.getsockname()[1]}")
    tally = Tally()
    failed = True
    try:
        cluster.start(nodes)
        ports = [p.port for p in cluster.procs]

        def check() -> None:
            tally.mesh_checks += 1
            problem = cluster.problem()
            if problem is not None:
                tally.mesh_broken.append(f"{tally.frames} frames in: {problem}")

        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        seconds = runner(fire(forge, ports, frames, concurrency, tally, check))
        check()  # right after the last frame
        dns_tally = DnsTally()
        dns_seconds = 0.0
        if dns_packets:
            dns_forge = DnsForge(random.Random(seed))
            dns_seconds = runner(fire_dns(dns_forge, cluster.dns_ports, dns_packets, dns_tally))
            check()
        dns_tally.answering_after = answering(cluster.dns_ports)
        settle_start, exact = time.monotonic(), False
        while time.monotonic() - settle_start < SETTLE:
            if cluster.whole(exact=True):
                exact = True
                break
            time.sleep(0.2)
        settled = time.monotonic() - settle_start
        exited = cluster.exited()
        findings = cluster.log_findings()
        crashes = len(exited) + sum(len(v) for v in findings.values())
        result = {
            "frames": tally.frames,
            "hostile_frames": tally.hostile,
            "bytes": tally.bytes,
            "connections": tally.connections,
            "sessions": tally.sessions,
            "seconds": round(seconds, 3),
            "frames_per_second": round(tally.frames / seconds, 1),
            "connections_per_second": round(tally.connections / seconds, 1),
            "crashes": crashes,
            "exited": exited,
            "log_findings": {k: v[:5] for k, v in findings.items()},
            "connect_failures": tally.connect_failures,
            "not_closed": tally.not_closed,
            "stalls": tally.stalls,
            "stalls_cut": tally.stalls_cut,
            "slowest_stall_cut": round(tally.slowest_stall_cut, 3),
            "mesh_checks": tally.mesh_checks,
            "mesh_broken": tally.mesh_broken[:10],
            "mesh_whole": not tally.mesh_broken and cluster.whole(),
            "members_exact_after": exact,
            "settle_seconds": round(settled, 3),
            "problem_after": cluster.problem(exact=True),
            "concurrency": concurrency,
            "seed": seed,
            "logs": str(workdir),  # removed after a clean run unless --keep-logs
            **dns_tally.result(),
            "dns_seconds": round(dns_seconds, 3),
        }
        failed = bool(
            crashes
            or tally.mesh_broken
            or not exact
            or tally.not_closed
            or dns_tally.not_closed
            or not dns_tally.answering_after
        )
        return result
    finally:
        cluster.stop()
        dead.close()
        if not failed and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    r = result
    print(
        f"fuzz: {r['frames']} frames ({r['hostile_frames']} random, mutated or garbage; "
        f"{r['bytes'] / 1e6:.1f} MB) over {r['connections']} connections "
        f"({r['sessions']} sessions past a hello) in {r['seconds']:.1f} s: "
        f"{r['frames_per_second']:.0f} frames/s, {r['connections_per_second']:.0f} connections/s "
        f"(concurrency {r['concurrency']}, seed {r['seed']})"
    )
    print(
        f"fuzz: crashes: {r['crashes']} (processes exited: {len(r['exited'])}, "
        f"error lines or tracebacks: {sum(len(v) for v in r['log_findings'].values())})"
    )
    for name, lines in r["log_findings"].items():
        for line in lines:
            print(f"fuzz:   {name}: {line}")
    print(
        f"fuzz: mesh checks while fuzzing: {r['mesh_checks'] - len(r['mesh_broken'])}/"
        f"{r['mesh_checks']} whole; after: members exactly the real ones: "
        f"{'yes' if r['members_exact_after'] else 'NO'} (in {r['settle_seconds']:.1f} s)"
    )
    for line in r["mesh_broken"]:
        print(f"fuzz:   broken: {line}")
    if r["problem_after"]:
        print(f"fuzz:   after: {r['problem_after']}")
    print(
        f"fuzz: stalled connections cut: {r['stalls_cut']}/{r['stalls']} (slowest "
        f"{r['slowest_stall_cut']:.2f} s, handshake timeout {HANDSHAKE_TIMEOUT:g} s); "
        f"never closed by the server: {r['not_closed']}; connect failures: {r['connect_failures']}"
    )
    print(report_line(r))
    if Path(r["logs"]).exists():
        print(f"fuzz: logs: {r['logs']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--frames", type=int, default=100_000, help="frames to fire (default 100000)"
    )
    parser.add_argument(
        "--dns-packets",
        type=int,
        default=None,
        help="DNS packets to fire at the DNS ports afterwards (default: a quarter of --frames)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="connections at a time")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--nodes", type=int, default=NODES, help="nodes besides the distributor")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs even on success")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    dns_packets = args.frames // 4 if args.dns_packets is None else args.dns_packets
    result = run(args.frames, args.concurrency, seed, args.nodes, args.keep_logs, dns_packets)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        result["crashes"] == 0
        and result["mesh_whole"]
        and result["members_exact_after"]
        and result["not_closed"] == 0
        and result["dns_not_closed"] == 0
        and result["dns_answering_after"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
