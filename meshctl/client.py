"""HTTP to a distributor or a node (urllib), with every failure mapped to one exception.

Failures are mapped here, once (as httpcore's _exceptions.py does), into three kinds that
carry their exit code and a one-line message:

    Usage        2  a URL we cannot use, a body that is not JSON
    ErrorAnswer  1  a 4xx/5xx, or an answer that is not the mesh API (HTML, wrong JSON,
                    not HTTP at all)
    Unreachable  3  connection refused or reset, a name that does not resolve, a timeout

Proxies from the environment are not used: meshctl talks to the address it is given.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

DEFAULT_TIMEOUT = 10.0  # seconds for one ordinary API call


class MeshctlError(Exception):
    """A failure meshctl reports as one line on stderr, then exits with `exit_code`."""

    exit_code = 1


class Usage(MeshctlError):
    exit_code = 2


class ErrorAnswer(MeshctlError):
    """A 4xx/5xx, or an answer that is not the mesh API's."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None, member: str | None = None):
        super().__init__(message)
        self.status = status
        self.member = member  # X-Mesh-Member of a failed request, if a member was called


class Unreachable(MeshctlError):
    exit_code = 3

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message  # the few words without the URL


def base_url(text: str, flag: str) -> str:
    """`http://host:port` (a bare `host:port` gets `http://`), without a trailing slash."""
    text = text.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise Usage(f"{flag} {text!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Usage(f"{flag} {text!r} is not an http:// or https:// URL with a host")
    return text.rstrip("/")


@dataclass
class Answer:
    """One HTTP answer: status, headers, the body as sent, and the body decoded."""

    status: int
    headers: Message
    body: bytes
    doc: Any = field(default=None)


def network_reason(exc: BaseException) -> str:
    """A few words for a network failure."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        return network_reason(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut off"
    if isinstance(exc, http.client.HTTPException):
        return f"a broken answer ({type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _error_line(doc: Any) -> str | None:
    """The API's `{"error": "...", ...}` as one line, other fields after it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return None
    extra = ", ".join(f"{k}={json.dumps(v)}" for k, v in doc.items() if k != "error")
    return doc["error"] + (f" ({extra})" if extra else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Client:
    """Calls to one program's HTTP API (`base`: its URL), with the bearer token if any.

    `what` names the program and `flag` the option that gave its URL, for messages:
    ("distributor", "--url") or ("node", "--node").
    """

    def __init__(self, base: str, token: str | None, what: str, flag: str) -> None:
        self.base = base
        self.token = token
        self.what = what
        self.flag = flag
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def url(self, path: str, query: list[tuple[str, str]] | None = None) -> str:
        return self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _token_hint(self) -> str:
        if self.token:
            return " (the token given, by --token or MESH_HTTP_TOKEN, is not this server's)"
        return " (give --token or set MESH_HTTP_TOKEN)"

    def _not_mesh(self, url: str, what: str, status: int | None = None) -> ErrorAnswer:
        return ErrorAnswer(
            f"{url}: {what}: is {self.flag} {self.base} a mesh {self.what}'s HTTP API?",
            status=status,
        )

    def _open(
        self,
        method: str,
        url: str,
        body: bytes | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """The response of any status (a 4xx/5xx is returned, not raised), or MeshctlError."""
        request = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            return exc  # type: ignore[return-value]  # an HTTPError is the response too
        except (http.client.BadStatusLine, http.client.RemoteDisconnected) as exc:
            # something listens there but does not speak HTTP (the mesh port, say)
            raise self._not_mesh(url, f"not an HTTP answer ({type(exc).__name__})") from None
        except ValueError as exc:  # urllib's "unknown url type", http.client.InvalidURL
            raise Usage(f"{self.flag} {self.base}: {_one_line(str(exc))}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = network_reason(exc)
            raise Unreachable(f"cannot reach the {self.what} at {url}: {why}", why) from None

    def _read(self, url: str, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except (http.client.HTTPException, ValueError) as exc:
            raise self._not_mesh(url, f"a broken answer ({type(exc).__name__})") from None
        except OSError as exc:
            raise Unreachable(f"{url}: the answer was cut off: {network_reason(exc)}") from None
        finally:
            response.close()

    def call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        doc: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        expect: str | None = None,
    ) -> Answer:
        """One API call whose answer must be JSON (an object with key `expect`, if given).

        A 2xx comes back as an Answer; anything else raises MeshctlError.
        """
        url = self.url(path, query)
        body = None if doc is None else json.dumps(doc).encode()
        response = self._open(method, url, body, timeout)
        raw = self._read(url, response)
        status, headers = response.status, response.headers
        try:
            decoded = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            decoded = None
            is_json = False
        else:
            is_json = True
        if status >= 400:
            reason = http.client.responses.get(status, "")
            detail = _error_line(decoded)
            if detail is None:
                raise self._not_mesh(url, f"{status} {reason}".strip(), status)
            if status == 401:
                detail += self._token_hint()
            raise ErrorAnswer(
                f"{url}: {status} {reason}: {detail}",
                status=status,
                member=headers.get("X-Mesh-Member"),
            )
        if not is_json:
            kind = headers.get_content_type()
            raise self._not_mesh(url, f"{status} with {kind}, not JSON")
        if expect is not None and (not isinstance(decoded, dict) or expect not in decoded):
            raise self._not_mesh(url, f"JSON without {expect!r}")
        return Answer(status, headers, raw, decoded)

    def stream(
        self, path: str, headers: Mapping[str, str], timeout: float
    ) -> http.client.HTTPResponse:
        """An open text/event-stream response (the caller closes it), or MeshctlError.

        `timeout` is how long one read may wait: longer than the server's keepalive.
        """
        url = self.url(path)
        response = self._open("GET", url, None, timeout, {"Accept": "text/event-stream", **headers})
        if response.status >= 400 or response.headers.get_content_type() != "text/event-stream":
            # the error body, as an ordinary call would report it
            status = response.status
            raw = self._read(url, response)
            try:
                detail = _error_line(json.loads(raw))
            except (UnicodeDecodeError, ValueError):
                detail = None
            if status >= 400 and detail is not None:
                hint = self._token_hint() if status == 401 else ""
                reason = http.client.responses.get(status, "")
                raise ErrorAnswer(f"{url}: {status} {reason}: {detail}{hint}", status=status)
            kind = response.headers.get_content_type()
            raise self._not_mesh(url, f"{status} with {kind}, not an event stream", status)
        return response


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its `event:` name, `id:` and `data:` (lines joined)."""

    kind: str
    id: str | None
    data: str


def read_events(lines: Iterator[bytes]) -> Iterator[Event]:
    """Server-sent events from a stream's lines (the WHATWG rules we need: comments,
    `event`, `id`, multi-line `data`, an event ends at a blank line). A stream that ends
    mid-event drops that event, as a browser does."""
    kind, event_id, data = "message", None, []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(kind, event_id, "\n".join(data))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the keepalive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
