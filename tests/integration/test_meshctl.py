"""meshctl as a person uses it: the command run as a process against a distributor and
nodes on loopback, its output and exit code checked. `watch` runs under a pseudo-terminal,
through a distributor restart, and is stopped with Ctrl-C."""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest

from harness.ports import free_port
from harness.procs import Proc
from harness.waiting import DEADLINE, wait_for
from tests.integration.cluster import Cluster, GhostPeer, full_mesh

MESHCTL = [sys.executable, "-m", "meshctl"]
WIDTH, HEIGHT = 200, 60  # the pseudo-terminal's size: every column of the table fits


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without MESH_* (a token or URL there would change answers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(extra)
    return env


def meshctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=env or clean_env(),
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run failed with `code` and said why in exactly one line on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("meshctl"), lines
    return lines[0]


def url(proc: Proc) -> str:
    return f"http://127.0.0.1:{proc.http_port}"


@pytest.fixture
def mesh(make_cluster: Callable[..., Cluster]) -> tuple[Cluster, Proc, Proc, Proc]:
    """A distributor, `alpha` (service goods, tag v2) and `bravo`, in a full mesh."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    alpha = cluster.node("alpha", extra=["--service", "goods", "--tag", "v2"])
    bravo = cluster.node("bravo")
    wait_for("a full mesh", lambda: full_mesh([alpha, bravo]))
    wait_for(
        "both registered",
        lambda: len(distributor.get("/v1/members")["members"]) == 2,
    )
    return cluster, distributor, alpha, bravo


# -- distributor commands ----------------------------------------------------------------


def test_members_lists_the_nodes_with_their_services(mesh: Any) -> None:
    _, distributor, alpha, _ = mesh
    result = meshctl("--url", url(distributor), "members")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "alpha" in line)
    assert "goods" in row and "v2" in row and f"127.0.0.1:{alpha.port}" in row
    assert any("bravo" in line for line in lines)
    assert "2 members" in result.stdout

    # --json is the API's body as it is; the options may also come after the command
    result = meshctl("members", "--json", "--url", url(distributor))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == distributor.get("/v1/members")

    # filters go to the distributor
    result = meshctl("--url", url(distributor), "members", "--service", "goods", "--tag", "v2")
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout and "bravo" not in result.stdout
    result = meshctl("--url", url(distributor), "--json", "members", "--tag", "nope")
    assert json.loads(result.stdout)["members"] == []


def test_services(mesh: Any) -> None:
    _, distributor, _, _ = mesh
    env = clean_env(MESH_URL=url(distributor))  # the URL from the environment this time
    result = meshctl("services", env=env)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "goods" in line)
    assert " 1 " in row and "v2" in row

    result = meshctl("services", "--json", env=env)
    assert json.loads(result.stdout) == distributor.get("/v1/services")

    result = meshctl("services", "goods", env=env)
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout and "bravo" not in result.stdout
    result = meshctl("services", "goods", "--json", env=env)
    assert json.loads(result.stdout) == distributor.get("/v1/services/goods")

    result = meshctl("services", "nothing", env=env)
    assert result.returncode == 0, result.stderr
    assert "no member provides nothing" in result.stdout


def test_links_shows_a_partial_partition(make_cluster: Callable[..., Cluster]) -> None:
    """A ghost member that the distributor sees alive and the nodes cannot reach."""
    cluster = make_cluster()  # short heartbeats: a link is reported 1.2 s after it breaks
    distributor = cluster.distributor()
    a, b = cluster.node("a"), cluster.node("b")
    wait_for("a full mesh", lambda: full_mesh([a, b]))
    base = url(distributor)
    result = meshctl("--url", base, "links")
    assert result.returncode == 0, result.stderr
    assert "no broken links" in result.stdout

    def links_json() -> dict[str, Any]:
        result = meshctl("--url", base, "--json", "links")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    with GhostPeer(cluster.distributor_port) as ghost:
        wait_for("both nodes report the ghost", lambda: len(links_json()["broken"]) == 2)
        assert links_json() == distributor.get("/v1/links")
        result = meshctl("--url", base, "links")
        assert result.returncode == 0, result.stderr
        rows = [line for line in result.stdout.splitlines() if "ghost" in line]
        assert len(rows) == 2, result.stdout
        assert all("retrying" in row for row in rows)
        assert any(row.lstrip("│ ").startswith("a (") for row in rows), rows
        ghost.reachable()
        wait_for("the partition heals", lambda: links_json() == {"broken": []})


# -- node commands --------------------------------------------------------------------


def test_status(mesh: Any) -> None:
    _, distributor, _, bravo = mesh
    result = meshctl("--node", url(bravo), "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bravo" in out.splitlines()[0]
    assert f"127.0.0.1:{distributor.port}" in out
    peer = next(line for line in out.splitlines() if "alpha" in line)
    assert "connected" in peer and "goods" in peer

    result = meshctl("status", "--json", env=clean_env(MESH_NODE_URL=url(bravo)))
    doc = json.loads(result.stdout)
    assert doc["name"] == "bravo" and [p["name"] for p in doc["peers"]] == ["alpha"]


def test_request_by_member_and_by_service(mesh: Any) -> None:
    _, _, alpha, bravo = mesh
    alpha_id = alpha.get("/v1/status")["id"]

    result = meshctl("--node", url(bravo), "request", "--to", "alpha", "echo", "--body", '{"n": 1}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"member: {alpha_id}"
    assert json.loads("\n".join(result.stdout.splitlines()[1:])) == {"n": 1}

    result = meshctl(
        "--node", url(bravo), "--json", "request", "--to", alpha_id, "echo", "--body", "[1, 2]"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [1, 2]
    assert result.stderr.strip() == f"member: {alpha_id}"

    result = meshctl(
        "request", "--service", "goods", "ping", "--timeout", "5", "--node", url(bravo), "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}
    assert result.stderr.strip() == f"member: {alpha_id}"

    # nobody offers it: the node's 503, one line, exit 1
    result = meshctl("--node", url(bravo), "request", "--service", "nothing", "ping")
    line = one_line_error(result, 1)
    assert "503" in line and "nothing" in line
    assert result.stdout == ""
    # an unknown member: 404
    line = one_line_error(meshctl("--node", url(bravo), "request", "--to", "zulu", "ping"), 1)
    assert "404" in line


# -- failures: one line and the exit code -----------------------------------------------


class NotMesh(http.server.BaseHTTPRequestHandler):
    """An HTTP server that is not the mesh: an HTML page for every GET and POST."""

    def do_GET(self) -> None:
        body = b"<html><body><h1>It works!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class FakeLinks(http.server.BaseHTTPRequestHandler):
    """A distributor's /v1/links with one broken link, in the shape DESIGN.md gives."""

    def do_GET(self) -> None:
        if self.path != "/v1/links":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "broken": [
                    {
                        "from": "a1b2c3d4e5f6",
                        "to": "f6e5d4c3b2a1",
                        "from_name": "alpha",
                        "to_name": "bravo",
                        "state": "retrying",
                        "since": "2026-01-01T00:00:00.000Z",
                    }
                ]
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_links_table_and_missing_endpoint() -> None:
    with serve(FakeLinks) as base:
        result = meshctl("--url", base, "links")
        assert result.returncode == 0, result.stderr
        row = next(line for line in result.stdout.splitlines() if "alpha" in line)
        assert "bravo" in row and "retrying" in row
    with serve(NotMesh) as base:  # a 200 that is HTML, not the API
        assert "/v1/links" in one_line_error(meshctl("--url", base, "links"), 1)

    class NoLinks(FakeLinks):
        def do_GET(self) -> None:
            self.send_error(404)

    with serve(NoLinks) as base:
        line = one_line_error(meshctl("--url", base, "links"), 1)
        assert "does not serve /v1/links" in line


def test_unreachable_is_exit_3() -> None:
    port = free_port()  # nothing listens there
    for args in (
        ["--url", f"http://127.0.0.1:{port}", "members"],
        ["--url", f"127.0.0.1:{port}", "services"],
        ["--url", f"http://127.0.0.1:{port}", "watch"],
        ["--node", f"http://127.0.0.1:{port}", "status"],
        ["--node", f"http://127.0.0.1:{port}", "request", "--to", "x", "ping"],
        ["--url", "http://no-such-host.invalid:9100", "members"],
    ):
        line = one_line_error(meshctl(*args), 3)
        assert "cannot reach" in line, line


def test_a_server_that_is_not_the_mesh_is_exit_1() -> None:
    with serve(NotMesh) as base:
        for args in (
            ["--url", base, "members"],
            ["--url", base, "--json", "services"],
            ["--url", base, "watch"],
            ["--node", base, "status"],
            ["--node", base, "request", "--to", "x", "ping"],
        ):
            line = one_line_error(meshctl(*args), 1)
            assert "mesh" in line, line


def test_the_mesh_port_is_not_http(make_cluster: Callable[..., Cluster]) -> None:
    distributor = make_cluster().distributor()
    line = one_line_error(meshctl("--url", f"127.0.0.1:{distributor.port}", "members"), 1)
    assert "not an HTTP answer" in line


def test_token(make_cluster: Callable[..., Cluster]) -> None:
    distributor = make_cluster().distributor(env={"MESH_HTTP_TOKEN": "secret"})
    base = url(distributor)
    line = one_line_error(meshctl("--url", base, "members"), 1)
    assert "401" in line and "--token" in line
    line = one_line_error(meshctl("--url", base, "members", "--token", "wrong"), 1)
    assert "401" in line
    one_line_error(meshctl("--url", base, "watch", "--token", "wrong"), 1)
    assert meshctl("--url", base, "members", "--token", "secret").returncode == 0
    result = meshctl("--url", base, "--json", "members", env=clean_env(MESH_HTTP_TOKEN="secret"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["members"] == []


def test_usage_is_exit_2() -> None:
    for args in (
        [],
        ["nonsense"],
        ["members", "--bogus"],
        ["request", "--to", "x"],  # no method
        ["request", "ping"],  # neither --to nor --service
        ["request", "--to", "x", "--service", "y", "ping"],
        ["request", "--to", "x", "ping", "--body", "{not json"],
        ["request", "--to", "x", "ping", "--timeout", "0"],
        ["--url", "ftp://example", "members"],
        ["--url", "http://127.0.0.1:99999", "members"],
    ):
        one_line_error(meshctl(*args), 2)


def test_help_is_useful() -> None:
    result = meshctl("--help")
    assert result.returncode == 0
    for word in ("members", "services", "watch", "links", "status", "request", "MESH_URL"):
        assert word in result.stdout
    result = meshctl("request", "--help")
    assert result.returncode == 0
    assert "--to" in result.stdout and "--service" in result.stdout and "--body" in result.stdout


def test_console_script(mesh: Any) -> None:
    """The `meshctl` script that `pip install -e .` puts beside the venv's python."""
    script = Path(sys.executable).parent / "meshctl"
    assert script.exists(), f"{script} is missing: pip install -e . (make setup does it)"
    _, distributor, _, _ = mesh
    result = subprocess.run(
        [str(script), "--url", url(distributor), "--json", "members"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert {m["name"] for m in json.loads(result.stdout)["members"]} == {"alpha", "bravo"}


# -- watch, under a pseudo-terminal -------------------------------------------------------

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


class Terminal:
    """A process on a pseudo-terminal of WIDTH x HEIGHT, its output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))

        def controlling_terminal() -> None:  # so Ctrl-C on the terminal is a SIGINT
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(WIDTH), "LINES": str(HEIGHT)},
            preexec_fn=controlling_terminal,  # before exec: nothing of ours runs in the child
        )
        os.close(slave)
        self.master = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    def text(self) -> str:
        """Everything printed so far, escape sequences removed."""
        with self._lock:
            raw = b"".join(self._chunks)
        return ANSI.sub("", raw.decode("utf-8", "replace"))

    def wait_for_text(self, what: str, after: int = 0) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"meshctl watch exited:\n{self.text()[-3000:]}"
            return what in self.text()[after:]

        try:
            wait_for(f"{what!r} on the terminal", seen)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- terminal ---\n{self.text()[-3000:]}") from None

    def ctrl_c(self) -> int:
        os.write(self.master, b"\x03")
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            self._reader.join(timeout=5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        os.close(self.master)


def test_watch_live_table_through_a_restart(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    cluster.node("alpha", extra=["--service", "goods"])
    wait_for("alpha registered", lambda: distributor.get("/v1/members")["members"])
    first_epoch = distributor.get("/v1/members")["epoch"]

    term = Terminal([*MESHCTL, "watch", "--url", url(distributor)], clean_env())
    try:
        term.wait_for_text("alpha")
        term.wait_for_text(first_epoch)

        # a node joins: its row appears
        mark = len(term.text())
        cluster.node("bravo", extra=["--service", "goods"])
        term.wait_for_text("bravo", after=mark)

        # the distributor dies: a banner; it comes back on the same ports: a new epoch
        mark = len(term.text())
        distributor.kill()
        term.wait_for_text("DISCONNECTED", after=mark)
        mark = len(term.text())
        distributor.start()  # the same command line: the same mesh and HTTP ports
        distributor.wait_healthy()
        new_epoch = distributor.get("/v1/members")["epoch"]
        assert new_epoch != first_epoch
        term.wait_for_text(new_epoch, after=mark)
        term.wait_for_text("connected", after=mark)
        # the nodes register again with the new distributor, and the table shows them
        wait_for(
            "both registered again",
            lambda: len(distributor.get("/v1/members")["members"]) == 2,
        )
        term.wait_for_text("2 members", after=mark)

        code = term.ctrl_c()
        output = term.text()
        assert code == 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert "KeyboardInterrupt" not in output
    finally:
        term.close()


class Lines:
    """A process's stdout line by line, each read with a deadline (a hung meshctl fails
    the test, it does not hang it): a thread reads, the test takes."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self, timeout: float = DEADLINE) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from meshctl within {timeout} s") from None


def watch_json(base: str) -> tuple[subprocess.Popen[str], Lines]:
    """`meshctl --url base watch --json` started, and its output line by line."""
    proc = subprocess.Popen(
        [*MESHCTL, "--url", base, "watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


def test_watch_json_lines_and_sigint(make_cluster: Callable[..., Cluster]) -> None:
    """--json: one JSON object a line (the events' data); SIGINT ends it with exit 0."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    proc, lines = watch_json(url(distributor))
    try:
        snapshot = json.loads(lines.next())
        assert snapshot["members"] == [] and snapshot["epoch"]
        cluster.node("alpha")
        joined = json.loads(lines.next())
        assert joined["member"]["name"] == "alpha"
        assert joined["version"] == snapshot["version"] + 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_watch_plain_lines_through_a_restart(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """Not a terminal, no --json: a line per change; the distributor's clean restart ends
    the stream, meshctl reconnects and names the new epoch as a restart."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    cluster.node("alpha")
    wait_for("alpha registered", lambda: distributor.get("/v1/members")["members"])
    with open(tmp_path / "watch.err", "w+") as err:
        proc = subprocess.Popen(
            [*MESHCTL, "--url", url(distributor), "watch"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=clean_env(),
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        try:
            wait_for("the snapshot", lambda: any("alpha" in line for line in lines))
            distributor.signal(signal.SIGTERM)  # a clean stop: the stream ends
            assert distributor.popen is not None
            distributor.popen.wait(timeout=DEADLINE)
            distributor.start()
            distributor.wait_healthy()
            epoch = distributor.get("/v1/members")["epoch"]
            wait_for("the new epoch", lambda: any(f"new epoch {epoch}" in x for x in lines))
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
        err.seek(0)
        errors = err.read()
    assert "disconnected" in errors and "reconnected" in errors, errors
    assert all(line.startswith("meshctl: watch:") for line in errors.splitlines()), errors


class ResumableStream(http.server.BaseHTTPRequestHandler):
    """An event stream that ends after each event, to see what a client sends back:
    the first connection gets a snapshot (id e1:1), the next ones a join (id e1:2)."""

    seen: ClassVar[list[str | None]] = []  # Last-Event-ID of each connection

    def do_GET(self) -> None:
        last = self.headers.get("Last-Event-ID")
        self.seen.append(last)
        if last is None:
            data = {"epoch": "e1", "version": 1, "members": []}
            event = b"event: snapshot\nid: e1:1\ndata: " + json.dumps(data).encode()
        else:
            member = {"id": "c0ffee00c0ffee", "name": "charlie", "services": []}
            data = {"epoch": "e1", "version": 2, "member": member}
            event = b"event: member_joined\nid: e1:2\ndata: " + json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b": hello\n\n" + event + b"\n\n")
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def test_watch_sends_last_event_id_when_it_reconnects() -> None:
    ResumableStream.seen = []
    with serve(ResumableStream) as base:
        proc, lines = watch_json(base)
        try:
            assert json.loads(lines.next())["members"] == []
            joined = json.loads(lines.next())
            assert joined["member"]["name"] == "charlie"
            # the join's stream ends too: it reconnects once more, from e1:2
            wait_for("a third connection", lambda: len(ResumableStream.seen) >= 3)
            proc.send_signal(signal.SIGTERM)  # `kill` stops it as cleanly as Ctrl-C
            _, err = proc.communicate(timeout=DEADLINE)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert ResumableStream.seen[:2] == [None, "e1:1"]
    # and after the join, it asks from e1:2 on, every time (at least once: seen above)
    later = ResumableStream.seen[2:]
    assert later and set(later) == {"e1:2"}, ResumableStream.seen
