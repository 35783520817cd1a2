"""meshctl's arguments, its commands, and the one place where failures become exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich.console import Console, RenderableType

from meshctl import render
from meshctl.client import Client, ErrorAnswer, MeshctlError, Usage, base_url
from meshctl.watch import watch

DEFAULT_URL = "http://127.0.0.1:9100"
DEFAULT_NODE = "http://127.0.0.1:9110"
REQUEST_HTTP_TIMEOUT = 60.0  # s an HTTP request waits without --timeout
REQUEST_GRACE = 10.0  # s beyond --timeout: the node answers 504 by then

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

DESCRIPTION = """\
The mesh's command line: asks a distributor or a node over its HTTP API.

distributor commands (--url, MESH_URL, default http://127.0.0.1:9100):
  members     the registered members (--service, --tag filter them)
  services    the services and how many members offer each; `services NAME`: its providers
  watch       follow the registry's events: a live table, until Ctrl-C
  links       peer links that nodes report broken (a partial partition)

node commands (--node, MESH_NODE_URL, default http://127.0.0.1:9110):
  status      who the node is, its distributors and its peer links
  request     call a method on a member (--to) or on any provider of a service (--service)
"""

EPILOG = """\
global options may come before or after the command: `meshctl --json members` and
`meshctl members --json` are the same.

exit codes: 0 ok; 1 an error answer (4xx/5xx, or not the mesh API); 2 usage;
3 unreachable (connection refused, unknown host, timeout). Errors are one line on stderr.

examples:
  meshctl members --service goods --tag v2
  meshctl --url http://10.0.0.5:9100 services goods
  meshctl --node http://127.0.0.1:9111 request --to node3 echo --body '{"hi": 1}'
  meshctl request --service goods list --timeout 2
  MESH_HTTP_TOKEN=secret meshctl watch
  meshctl --json members | jq -r '.members[].name'
"""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be 0 < seconds <= 300, not {text}")
    return value


def _add_globals(parser: argparse.ArgumentParser, sub: bool, distributor: bool | None) -> None:
    """The global options; on a command's parser too, with defaults that do not override
    a value given before the command. `distributor`: which URL option the command uses
    (None: the top-level parser, both)."""
    default: Any = argparse.SUPPRESS if sub else None
    group = parser.add_argument_group("global options")
    if distributor is None or distributor:
        group.add_argument(
            "--url",
            default=default,
            metavar="URL",
            help=f"the distributor's HTTP API (env MESH_URL, default {DEFAULT_URL})",
        )
    if distributor is None or not distributor:
        group.add_argument(
            "--node",
            default=default,
            metavar="URL",
            help=f"the node's HTTP API (env MESH_NODE_URL, default {DEFAULT_NODE})",
        )
    group.add_argument(
        "--token",
        default=default,
        help="bearer token for an API started with an HTTP token (env MESH_HTTP_TOKEN)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default,
        help="print the API's JSON body as it is (watch: one JSON object per event line)",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="meshctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, sub=False, distributor=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, distributor: bool, summary: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_globals(sub, sub=True, distributor=distributor)
        return sub

    members = command(
        "members",
        True,
        "the registered members",
        "The distributor's members (GET /v1/members): name, id, address, http, services, tags,\n"
        "draining and age (since it registered). Filters are applied by the distributor.",
    )
    members.add_argument("--service", metavar="S", help="only members that provide service S")
    members.add_argument(
        "--tag",
        metavar="T",
        action="append",
        default=[],
        help="only members with tag T (repeatable: all must match)",
    )

    services = command(
        "services",
        True,
        "services, or one service's providers",
        "Without NAME: every service, how many members provide it (draining ones counted)\n"
        "and their tags (GET /v1/services). With NAME: its providers (GET /v1/services/NAME).",
    )
    services.add_argument("name", nargs="?", metavar="NAME", help="one service")

    command(
        "watch",
        True,
        "follow the registry live (Ctrl-C stops)",
        "Follows the distributor's event stream (GET /v1/events): the member table, redrawn\n"
        "in place, and the last changes under it. If the distributor goes away the table stays\n"
        "as last known under a red banner, and meshctl reconnects with backoff (sending\n"
        "Last-Event-ID, so only missed events come back); a restarted distributor shows its\n"
        "new epoch. The first connection failing exits 3. With --json: one JSON object per\n"
        "event (the event's data as the API sends it), reconnections reported on stderr.\n"
        "Not on a terminal and without --json: one line per change. Ctrl-C exits 0.",
    )

    command(
        "links",
        True,
        "peer links that nodes report broken",
        "Peer links that nodes report they cannot keep up (GET /v1/links): a partial\n"
        "partition, where two members are both registered but one cannot reach the other.",
    )

    command(
        "status",
        False,
        "a node's identity, distributors and peers",
        "A node's own view (GET /v1/status): who it is, the state of its distributor links\n"
        "and of its peer links (with the services each peer provides).",
    )

    request = command(
        "request",
        False,
        "call a method on a member or a service",
        "Sends a request through a node (POST /v1/request) to a member by name or id (--to)\n"
        "or to any provider of a service (--service), and prints the handler's result. The\n"
        "member that answered (X-Mesh-Member) is printed as a line first, or with --json\n"
        "on stderr. An error answer (404 unknown member, 503 not connected or no provider,\n"
        "504 timeout, ...) is one line on stderr and exit 1.",
    )
    target = request.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME|ID", help="the member to call (a name or an id)")
    target.add_argument("--service", metavar="NAME", help="any provider of this service")
    request.add_argument("method", metavar="METHOD", help="the method (ping, echo, or a service's)")
    request.add_argument(
        "--body", metavar="JSON", help="the request body, any JSON value (default {})"
    )
    request.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="seconds to wait for the answer, 0 < S <= 300 (default: the node's, 5)",
    )
    return parser


class Context:
    """Resolved options and the two output streams."""

    def __init__(self, args: argparse.Namespace) -> None:
        env = os.environ
        self.json = bool(args.json)
        self.token = args.token if args.token is not None else env.get("MESH_HTTP_TOKEN")
        self.url = getattr(args, "url", None) or env.get("MESH_URL") or DEFAULT_URL
        self.node = getattr(args, "node", None) or env.get("MESH_NODE_URL") or DEFAULT_NODE
        # tables are not padded: a wide console only stops a pipe's output wrapping at 80
        wide = None if sys.stdout.isatty() or env.get("COLUMNS") else 200
        # markup off: nothing printed here is ours to style by markup; server strings are data
        self.out = Console(width=wide, soft_wrap=False, markup=False)

    def distributor(self) -> Client:
        return Client(base_url(self.url, "--url"), self.token, "distributor", "--url")

    def node_client(self) -> Client:
        return Client(base_url(self.node, "--node"), self.token, "node", "--node")

    def emit(self, body: bytes, view: Callable[[], RenderableType]) -> None:
        """The body as it is with --json, else the view of it."""
        if self.json:
            sys.stdout.write(body.decode() + "\n")
            sys.stdout.flush()
        else:
            self.out.print(view())


def _shape(client: Client, path: str, build: Callable[[], RenderableType]) -> RenderableType:
    """`build()`, with a document of the wrong shape reported as not the mesh API."""
    try:
        return build()
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ErrorAnswer(
            f"{client.url(path)}: unexpected JSON ({type(exc).__name__}: {exc}):"
            f" is {client.flag} {client.base} a mesh {client.what}'s HTTP API?"
        ) from None


def cmd_members(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.distributor()
    query = ([("service", args.service)] if args.service else []) + [("tag", t) for t in args.tag]
    answer = client.call("GET", "/v1/members", query, expect="members")
    view = _shape(client, "/v1/members", lambda: render.members_view(answer.doc, time.time()))
    ctx.emit(answer.body, lambda: view)
    return EXIT_OK


def cmd_services(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.distributor()
    if args.name:
        path = f"/v1/services/{urllib.parse.quote(args.name, safe='')}"
        answer = client.call("GET", path, expect="members")
        view = _shape(client, path, lambda: render.service_view(answer.doc, time.time()))
    else:
        path = "/v1/services"
        answer = client.call("GET", path, expect="services")
        view = _shape(client, path, lambda: render.services_view(answer.doc))
    ctx.emit(answer.body, lambda: view)
    return EXIT_OK


def cmd_links(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.distributor()
    try:
        answer = client.call("GET", "/v1/links", expect="broken")
    except ErrorAnswer as exc:
        if exc.status != 404:
            raise
        raise ErrorAnswer(
            f"{client.url('/v1/links')}: 404 Not Found: this distributor does not serve"
            " /v1/links (a version older than this meshctl?)"
        ) from None
    view = _shape(client, "/v1/links", lambda: render.links_view(answer.doc, time.time()))
    ctx.emit(answer.body, lambda: view)
    return EXIT_OK


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.node_client()
    answer = client.call("GET", "/v1/status", expect="peers")
    view = _shape(client, "/v1/status", lambda: render.status_view(answer.doc, time.time()))
    ctx.emit(answer.body, lambda: view)
    return EXIT_OK


def cmd_request(ctx: Context, args: argparse.Namespace) -> int:
    body: Any = {}
    if args.body is not None:
        try:
            body = json.loads(args.body)
        except ValueError as exc:
            raise Usage(f"--body is not JSON: {exc}") from None
    doc: dict[str, Any] = {"method": args.method, "body": body}
    if args.to is not None:
        doc["to"] = args.to
    else:
        doc["service"] = args.service
    http_timeout = REQUEST_HTTP_TIMEOUT
    if args.timeout is not None:
        doc["timeout"] = args.timeout
        http_timeout = args.timeout + REQUEST_GRACE
    client = ctx.node_client()
    try:
        answer = client.call("POST", "/v1/request", doc=doc, timeout=http_timeout)
    except ErrorAnswer as exc:
        if exc.member:  # a member was chosen and failed: say which, on the same line
            raise ErrorAnswer(f"{exc} [member {exc.member}]", exc.status) from None
        raise
    member = answer.headers.get("X-Mesh-Member")
    if ctx.json:
        if member:
            sys.stderr.write(f"member: {member}\n")
        sys.stdout.write(answer.body.decode() + "\n")
    else:
        if member:
            sys.stdout.write(f"member: {member}\n")
        ctx.out.print_json(data=answer.doc)
    sys.stdout.flush()
    return EXIT_OK


def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    return watch(ctx.distributor(), ctx.json, ctx.out)


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "members": cmd_members,
    "services": cmd_services,
    "links": cmd_links,
    "status": cmd_status,
    "request": cmd_request,
    "watch": cmd_watch,
}


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](Context(args), args)
    except MeshctlError as exc:
        sys.stderr.write(f"meshctl: {' '.join(str(exc).split())}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 0 if args.command == "watch" else 130


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `meshctl members | head -1`: the reader left, not an error
        # stdout is gone: point it at devnull so the interpreter's final flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug of ours: one line, not a traceback (MESHCTL_DEBUG shows it)
        if os.environ.get("MESHCTL_DEBUG"):
            raise
        sys.stderr.write(f"meshctl: internal error: {type(exc).__name__}: {exc}\n")
        code = EXIT_ERROR
    sys.exit(code)


if __name__ == "__main__":
    main()
