"""Consul's service-definition JSON, read into instances and their health checks.

Pure: no I/O, no clock. A definition comes from `--instances-file` (`{"service": {...}}` or
`{"services": [...]}`) or from the body of `PUT /v1/agent/service/register`, as Consul's
own clients send it: keys in any case, snake_case accepted (Consul's decoder translates
`deregister_critical_service_after` and friends), unknown keys ignored. Every ValueError
names the field as Consul spells it (`Port`, `Check.Interval`, `Checks[1].HTTP`), so the
node can answer 400 with it, or exit 2 with one line.

Only HTTP and TCP checks run here. A TTL, script, gRPC, UDP, H2PING, Docker, OS-service or
alias check is refused by name, never silently dropped: a service registered with a check
the mesh does not run would look healthy when nobody is looking.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.goduration import MAX_DURATION_NS, parse_go_duration
from shared.wire import (
    DNS_LABEL,
    HEALTH,
    INSTANCE_ID,
    MAX_INSTANCES,
    MAX_NAME,
    MAX_TAGS,
    host_name,
    labels,
    meta_pairs,
    parse_address,
)

MAX_CHECKS = 4  # checks one instance may have
MIN_INTERVAL = 0.1  # seconds; Consul clamps to 1 s, DESIGN.md allows 100 ms and refuses less
DEFAULT_TIMEOUT = 10.0  # seconds, Consul's default for HTTP and TCP checks
MIN_DEREGISTER_AFTER = 1.0  # seconds
MAX_URL = 2048
MAX_HEADERS = 32  # header values a check sends, all names together
MAX_HEADER_VALUE = 1024
MAX_THRESHOLD = 1_000_000  # SuccessBeforePassing, FailuresBeforeCritical

# an HTTP method and a header name are RFC 9110 tokens
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a header value: all but tab

# The check kinds Consul has that the mesh does not run, by the key that makes one.
_UNSUPPORTED = {
    "ttl": "a TTL check",
    "args": "a script check",
    "scriptargs": "a script check",
    "script": "a script check",
    "dockercontainerid": "a Docker check",
    "grpc": "a gRPC check",
    "udp": "a UDP check",
    "h2ping": "an H2PING check",
    "aliasservice": "an alias check",
    "aliasnode": "an alias check",
    "osservice": "an OS-service check",
}


@dataclass(frozen=True, slots=True)
class CheckDefinition:
    """One health check of an instance, as registered (durations in seconds)."""

    check_id: str  # Consul's CheckID if given, else "service:<id>" (":<n>" when several)
    name: str  # Name if given, else "Service '<name>' check"
    kind: str  # "http" | "tcp"
    target: str  # the URL, or host:port
    method: str  # HTTP method, "GET" unless given
    headers: tuple[tuple[str, str], ...]  # Header {"k": ["v", ...]}, one pair a value
    interval: float  # between the end of one run and the start of the next
    timeout: float  # 10 s unless given; never longer than the interval
    success_before_passing: int  # 0: the first passing result counts
    failures_before_critical: int  # 0: the first failing result counts
    deregister_after: float | None  # DeregisterCriticalServiceAfter; None: never
    status: str  # the initial status, "critical" unless given; one of HEALTH


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One instance: a service outside the node's process, at an address and port."""

    id: str
    name: str
    address: str | None  # None: the agent's advertise host
    port: int
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]
    checks: tuple[CheckDefinition, ...]  # at most MAX_CHECKS


def parse_service(doc: Any) -> ServiceDefinition:
    """One definition (the body of PUT /v1/agent/service/register); ValueError names the
    field, e.g. "Port: must be 1..65535"."""
    return _service(doc, "")


def parse_services_file(doc: Any) -> list[ServiceDefinition]:
    """An instances file: `{"service": {...}}` or `{"services": [{...}, ...]}` (both keys
    may be given, as Consul's config allows, and `service` may hold a list as in Consul's
    docs); ValueError names the definition and the field, e.g. "services[1].Port: ..."."""
    if not isinstance(doc, Mapping):
        raise ValueError('an instances file is a JSON object: {"service": {...}}')
    keys = _Keys(doc, "")
    found: list[tuple[Any, str]] = []
    for key, plural in (("service", False), ("services", True)):
        value = keys.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            found.extend((item, f"{key}[{i}].") for i, item in enumerate(value))
        elif plural:
            raise ValueError("services: must be a list of service definitions")
        else:
            found.append((value, f"{key}."))
    if not found and keys.get("service") is None and keys.get("services") is None:
        raise ValueError('an instances file needs a "service" object or a "services" list')
    if len(found) > MAX_INSTANCES:
        raise ValueError(f"services: at most {MAX_INSTANCES} instances, got {len(found)}")
    services = [_service(item, prefix) for item, prefix in found]
    seen: dict[str, str] = {}
    for service, (_, prefix) in zip(services, found, strict=True):
        # a file is one author's intent: a repeated ID is a mistake, not a replacement
        if service.id in seen:
            raise ValueError(f"{prefix}ID: {service.id!r} is already given by {seen[service.id]}")
        seen[service.id] = prefix.rstrip(".")
    return services


def go_duration(value: Any, field: str) -> float:
    """A duration as Consul's decoder reads one, in seconds.

    A string is Go's time.ParseDuration ("500ms", "10s", "1m30s", "1.5h", "0"); a JSON
    number is nanoseconds, as Consul takes it (CheckType.UnmarshalJSON: time.Duration(v)).
    Negative durations are refused. ValueError names the field.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'{field}: must be a duration such as "10s", got {value!r}')
    if isinstance(value, int | float):
        if value != value or not 0 <= value <= MAX_DURATION_NS:  # NaN, negative, overflow
            raise ValueError(f"{field}: {value!r} nanoseconds is out of range")
        return int(value) / 1e9  # Go truncates a float to whole nanoseconds
    return parse_go_duration(value, field) / 1e9


# -- the parts ----------------------------------------------------------------


class _Keys:
    """An object's keys matched as Consul's decoder does: any case, underscores ignored
    (so `deregister_critical_service_after`, `DeregisterCriticalServiceAfter` and
    `deregistercriticalserviceafter` are one key). Two spellings of one key are refused:
    which one wins would be a guess."""

    def __init__(self, doc: Mapping[Any, Any], where: str) -> None:
        self.values: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in doc.items():
            if not isinstance(key, str):
                continue
            norm = key.replace("_", "").lower()
            if norm in spelled:
                lead = f"{where}: " if where else ""
                raise ValueError(f"{lead}{spelled[norm]!r} and {key!r} are the same key")
            spelled[norm] = key
            self.values[norm] = value

    def get(self, *names: str) -> Any:
        """The value of the first of `names` given (normalised names), None if none is."""
        for name in names:
            value = self.values.get(name)
            if value is not None:
                return value
        return None


def _service(doc: Any, prefix: str) -> ServiceDefinition:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'a service definition'}: must be a JSON object")
    keys = _Keys(doc, prefix.rstrip("."))

    name = keys.get("name")
    if name is None or name == "":
        raise ValueError(f"{prefix}Name: required")
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
        raise ValueError(f"{prefix}Name: {name!r} is not a DNS label ({DNS_LABEL.pattern})")

    service_id = keys.get("id")
    if service_id is None or service_id == "":  # Consul's default: the name
        service_id = name
    if not isinstance(service_id, str) or not INSTANCE_ID.fullmatch(service_id):
        raise ValueError(f"{prefix}ID: {service_id!r} does not match {INSTANCE_ID.pattern}")

    address = keys.get("address")
    if address == "":  # Consul: empty is the agent's address
        address = None
    if address is not None:
        try:
            address = host_name(address, "address")
        except ValueError as exc:
            raise ValueError(_named(f"{prefix}Address", "address", exc)) from None
        # Consul refuses these too ("Invalid service address"): nobody can dial them
        if address in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0"):
            raise ValueError(f"{prefix}Address: {address!r} is not an address to dial")

    port = keys.get("port")
    if port is None:
        raise ValueError(f"{prefix}Port: required")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"{prefix}Port: must be 1..65535, got {port!r}")

    tags = keys.get("tags")
    try:
        tag_list = labels(() if tags is None else tags, "tags", MAX_TAGS)
    except ValueError as exc:
        raise ValueError(_named(f"{prefix}Tags", "tags", exc)) from None
    meta = keys.get("meta")
    try:
        meta_list = meta_pairs({} if meta is None else meta)
    except ValueError as exc:
        raise ValueError(_named(f"{prefix}Meta", "meta", exc)) from None

    # Consul's ServiceDefinition.CheckTypes(): Check first, then Checks, numbered together
    raw: list[tuple[Any, str]] = []
    check = keys.get("check")
    if isinstance(check, list):  # HCL, and some of Consul's JSON examples, give a list
        raw.extend((c, f"{prefix}Check[{i}]") for i, c in enumerate(check))
    elif check is not None:
        raw.append((check, f"{prefix}Check"))
    checks = keys.get("checks")
    if checks is not None:
        if not isinstance(checks, list):
            raise ValueError(f"{prefix}Checks: must be a list of checks")
        raw.extend((c, f"{prefix}Checks[{i}]") for i, c in enumerate(checks))
    # Consul drops empty check objects: a template's `"check": {}` is no check
    raw = [(c, where) for c, where in raw if not (isinstance(c, Mapping) and not c)]
    if len(raw) > MAX_CHECKS:
        raise ValueError(f"{prefix}Checks: at most {MAX_CHECKS} checks, got {len(raw)}")
    parsed: list[CheckDefinition] = []
    for n, (item, where) in enumerate(raw, start=1):
        default_id = f"service:{service_id}" + (f":{n}" if len(raw) > 1 else "")
        parsed.append(_check(item, where, default_id, f"Service '{name}' check"))
    ids = [c.check_id for c in parsed]
    for (_, where), check_id in zip(raw, ids, strict=True):
        if ids.count(check_id) > 1:
            raise ValueError(f"{where}.CheckID: {check_id!r} is given to two checks")

    return ServiceDefinition(
        id=service_id,
        name=name,
        address=address,
        port=port,
        tags=tag_list,
        meta=meta_list,
        checks=tuple(parsed),
    )


def _named(field: str, word: str, exc: ValueError) -> str:
    """A shared validator's message, led by the field as the user wrote it."""
    text = str(exc)
    return f"{field}: {text.removeprefix(word + ': ').removeprefix(word + ' ')}"


def _check(doc: Any, where: str, default_id: str, default_name: str) -> CheckDefinition:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: must be a JSON object")
    keys = _Keys(doc, where)

    http, tcp = keys.get("http"), keys.get("tcp")
    if http is None and tcp is None:
        kinds = [_UNSUPPORTED[k] for k in keys.values if k in _UNSUPPORTED]
        if kinds:
            raise ValueError(f"{where}: {kinds[0]} is not supported here, only HTTP and TCP")
        raise ValueError(f"{where}: needs HTTP (a URL) or TCP (host:port)")
    if http is not None and tcp is not None:
        raise ValueError(f"{where}: give HTTP or TCP, not both")

    method = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    if http is not None:
        kind, target = "http", _url(http, f"{where}.HTTP")
        given = keys.get("method")
        if given is not None and given != "":
            if not isinstance(given, str) or len(given) > 32 or not _TOKEN.fullmatch(given):
                raise ValueError(f"{where}.Method: {given!r} is not an HTTP method")
            method = given
        headers = _headers(keys.get("header"), f"{where}.Header")
        # a body or a redirect policy the check would silently not honour
        body = keys.get("body")
        if body is not None and body != "":
            raise ValueError(f"{where}.Body: not supported here (a check sends no body)")
        if keys.get("disableredirects") is True:
            raise ValueError(f"{where}.DisableRedirects: not supported here (checks follow)")
    else:
        kind = "tcp"
        if not isinstance(tcp, str):
            raise ValueError(f"{where}.TCP: must be host:port")
        try:
            parse_address(tcp)
        except ValueError as exc:
            raise ValueError(f"{where}.TCP: {exc}") from None
        target = tcp

    interval_given = keys.get("interval")
    if interval_given is None:
        raise ValueError(f"{where}.Interval: required")
    interval = go_duration(interval_given, f"{where}.Interval")
    if interval < MIN_INTERVAL:
        raise ValueError(f"{where}.Interval: must be at least 100ms, got {interval_given!r}")

    timeout = DEFAULT_TIMEOUT
    timeout_given = keys.get("timeout")
    if timeout_given is not None:
        timeout = go_duration(timeout_given, f"{where}.Timeout") or DEFAULT_TIMEOUT  # 0: default
    # a run may not outlast the wait between runs: a slow app is one late result, not a pile
    timeout = min(timeout, interval)

    deregister_after: float | None = None
    deregister_given = keys.get("deregistercriticalserviceafter")
    if deregister_given is not None:
        field = f"{where}.DeregisterCriticalServiceAfter"
        deregister_after = go_duration(deregister_given, field) or None  # 0: never, as Consul
        if deregister_after is not None and deregister_after < MIN_DEREGISTER_AFTER:
            raise ValueError(f"{field}: must be at least 1s, got {deregister_given!r}")

    status = keys.get("status")
    if status is None or status == "":
        status = "critical"  # Consul's default: not in rotation before a check has passed
    if status not in HEALTH:
        raise ValueError(f"{where}.Status: must be passing, warning or critical, got {status!r}")

    check_id = keys.get("checkid", "id")
    if check_id is None or check_id == "":
        check_id = default_id
    if not isinstance(check_id, str) or len(check_id) > MAX_NAME or not check_id.isprintable():
        raise ValueError(f"{where}.CheckID: must be printable text of 1..{MAX_NAME} characters")
    name = keys.get("name")
    if name is None or name == "":
        name = default_name
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"{where}.Name: must be printable text of 1..{MAX_NAME} characters")

    return CheckDefinition(
        check_id=check_id,
        name=name,
        kind=kind,
        target=target,
        method=method,
        headers=headers,
        interval=interval,
        timeout=timeout,
        success_before_passing=_threshold(
            keys.get("successbeforepassing"), f"{where}.SuccessBeforePassing"
        ),
        failures_before_critical=_threshold(
            keys.get("failuresbeforecritical"), f"{where}.FailuresBeforeCritical"
        ),
        deregister_after=deregister_after,
        status=status,
    )


def _url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise ValueError(f"{field}: must be an http:// or https:// URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field}: {value!r} is not an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{field}: {value!r} has white space or control characters")
    return value


def _headers(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f'{field}: must be an object of lists, such as {{"X-A": ["v"]}}')
    pairs: list[tuple[str, str]] = []
    for key, values in value.items():
        if not isinstance(key, str) or not _TOKEN.fullmatch(key):
            raise ValueError(f"{field}: {key!r} is not a header name")
        if isinstance(values, str) or not isinstance(values, list):
            raise ValueError(f"{field}: the value of {key!r} must be a list of strings")
        for item in values:
            # CR or LF in a value would let a definition write its own request lines
            if not isinstance(item, str) or len(item) > MAX_HEADER_VALUE or _CONTROL.search(item):
                raise ValueError(f"{field}: a value of {key!r} is not a header value")
            pairs.append((key, item))
    if len(pairs) > MAX_HEADERS:
        raise ValueError(f"{field}: at most {MAX_HEADERS} header values, got {len(pairs)}")
    return tuple(pairs)


def _threshold(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THRESHOLD:
        raise ValueError(f"{field}: must be a whole number 0..{MAX_THRESHOLD}, got {value!r}")
    return value
