"""node/definitions.py: Consul's service definitions, as Consul's docs and clients write them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from node.definitions import (
    ServiceDefinition,
    go_duration,
    parse_service,
    parse_services_file,
)
from tests.unit.test_checks import BASE

# -- Consul's documented examples (website/content/docs/services/...) -----------------


def test_consul_docs_redis_service_with_tagged_addresses_and_weights() -> None:
    # services-configuration-reference.mdx: what the mesh does not use is ignored
    doc = orjson.loads(
        b"""{
      "service": {
        "name": "redis",
        "address": "192.0.2.10",
        "port": 80,
        "tagged_addresses": {
          "lan": {"address": "192.0.2.10", "port": 80},
          "lan_ipv6": {"address": "2001:db8:1:2:cafe::1337", "port": 80}
        },
        "weights": {"passing": 3, "warning": 2, "critical": 1}
      }
    }"""
    )
    assert parse_services_file(doc) == [
        ServiceDefinition("redis", "redis", "192.0.2.10", 80, (), (), ())
    ]


def test_consul_docs_tcp_check() -> None:
    # usage/checks.mdx, "TCP check configuration", inside a service
    doc = {
        "name": "ssh",
        "port": 22,
        "check": {
            "id": "ssh",
            "name": "SSH TCP on port 22",
            "tcp": "localhost:22",
            "interval": "10s",
            "timeout": "1s",
        },
    }
    (check,) = parse_service(doc).checks
    # every other field as in test_checks.BASE: Consul's defaults, a 10 s interval, 1 s timeout
    assert check == replace(
        BASE, check_id="ssh", name="SSH TCP on port 22", kind="tcp", target="localhost:22"
    )


HTTP_EXAMPLE = {
    # usage/checks.mdx, "HTTP check configuration"
    "id": "api",
    "name": "HTTP API on port 5000",
    "http": "https://localhost:5000/health",
    "tls_server_name": "",
    "tls_skip_verify": False,
    "method": "POST",
    "header": {"Content-Type": ["application/json"]},
    "body": '{"method":"health"}',
    "interval": "10s",
    "timeout": "1s",
}


def test_consul_docs_http_check_with_a_body_is_refused_by_name() -> None:
    # a check that would silently be sent without its body is refused, not half-run
    with pytest.raises(ValueError, match=r"^Check\.Body: not supported"):
        parse_service({"name": "api", "port": 5000, "check": HTTP_EXAMPLE})


def test_consul_docs_http_check_method_header_tls_fields() -> None:
    example = {k: v for k, v in HTTP_EXAMPLE.items() if k != "body"}
    (check,) = parse_service({"name": "api", "port": 5000, "check": example}).checks
    assert (check.check_id, check.name, check.kind) == ("api", "HTTP API on port 5000", "http")
    assert check.target == "https://localhost:5000/health"
    assert check.method == "POST"
    assert check.headers == (("Content-Type", "application/json"),)
    assert (check.interval, check.timeout) == (10.0, 1.0)


def test_consul_docs_multiple_checks_with_a_script_check_is_refused_by_name() -> None:
    # usage/checks.mdx, "Define multiple checks": chk1 and chk3 are script checks
    doc = {
        "name": "web",
        "port": 5000,
        "checks": [
            {"id": "chk1", "name": "mem", "args": ["/bin/check_mem", "-limit", "256MB"],
             "interval": "5s"},
            {"id": "chk2", "name": "/health", "http": "http://localhost:5000/health",
             "interval": "15s"},
        ],
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"^Checks\[0\]: a script check is not supported"):
        parse_service(doc)
    doc["checks"] = doc["checks"][1:]
    (check,) = parse_service(doc).checks
    assert (check.check_id, check.name, check.interval) == ("chk2", "/health", 15.0)


def test_consul_docs_initial_status_with_check_given_as_a_list() -> None:
    # usage/checks.mdx, "Define initial health check status": `check` holds a list
    doc = {
        "name": "web",
        "port": 80,
        "check": [{"id": "up", "http": "http://localhost/", "interval": "10s",
                   "status": "passing"}],
    }  # fmt: skip
    (check,) = parse_service(doc).checks
    assert (check.check_id, check.status) == ("up", "passing")


def test_consul_docs_snake_case_thresholds_and_deregister() -> None:
    doc = {
        "service": {
            "name": "payments",
            "port": 8080,
            "check": {
                "id": "payments-http",
                "name": "HTTP API health",
                "http": "http://localhost:8080/health",
                "interval": "10s",
                "timeout": "3s",
                "deregister_critical_service_after": "60s",
                "success_before_passing": 2,
                "failures_before_critical": 3,
            },
        }
    }
    (service,) = parse_services_file(doc)
    (check,) = service.checks
    assert check.deregister_after == 60.0
    assert (check.success_before_passing, check.failures_before_critical) == (2, 3)


# -- py-consul's exact shapes ---------------------------------------------------------


def py_consul_register(**kw: Any) -> dict[str, Any]:
    """The body py-consul's agent.service.register() PUTs (lowercase keys, no Content-Type)."""
    payload: dict[str, Any] = {"name": kw["name"]}
    for key in ("id", "address", "port", "tags", "meta", "check", "checks"):
        if kw.get(key):
            payload[key] = kw[key]
    return payload


def test_py_consul_http_check() -> None:
    # Check.http(url, interval, timeout=, deregister=, header=)
    check = {
        "http": "http://10.0.0.5:8080/health",
        "interval": "10s",
        "timeout": "2s",
        "DeregisterCriticalServiceAfter": "90m",
        "header": {"x-foo": ["bar", "baz"]},
    }
    body = py_consul_register(
        name="web", id="web-1", address="10.0.0.5", port=8080, tags=["v1"], check=check
    )
    service = parse_service(orjson.loads(orjson.dumps(body)))
    assert (service.id, service.name, service.address, service.port) == (
        "web-1",
        "web",
        "10.0.0.5",
        8080,
    )
    assert service.tags == ("v1",)
    (c,) = service.checks
    assert c.check_id == "service:web-1"
    assert c.name == "Service 'web' check"
    assert c.headers == (("x-foo", "bar"), ("x-foo", "baz"))
    assert (c.interval, c.timeout, c.deregister_after) == (10.0, 2.0, 5400.0)


def test_py_consul_tcp_checks_are_numbered_as_consul_does() -> None:
    checks = [
        {"tcp": "10.0.0.5:8080", "interval": "10s"},
        {"http": "http://10.0.0.5:8080/", "interval": "5s"},
    ]
    service = parse_service(py_consul_register(name="web", port=8080, checks=checks))
    assert service.id == "web"  # ID defaults to the name
    assert service.address is None  # the agent's address
    assert [c.check_id for c in service.checks] == ["service:web:1", "service:web:2"]
    assert [c.kind for c in service.checks] == ["tcp", "http"]
    assert service.checks[0].timeout == 10.0  # the default, within the 10 s interval


@pytest.mark.parametrize(
    ("check", "kind"),
    [
        ({"ttl": "10s"}, "a TTL check"),  # Check.ttl
        ({"args": ["/bin/true"], "interval": "10s"}, "a script check"),  # Check.script
        ({"script": "true", "interval": "10s"}, "a script check"),  # old Check.script
        ({"grpc": "127.0.0.1:9000", "interval": "10s"}, "a gRPC check"),
        ({"AliasService": "web"}, "an alias check"),
        ({"udp": "127.0.0.1:53", "interval": "10s"}, "a UDP check"),
    ],
)
def test_checks_the_mesh_does_not_run_are_refused_by_name(check: dict[str, Any], kind: str) -> None:
    with pytest.raises(ValueError, match=rf"^Check: {kind} is not supported here"):
        parse_service({"name": "web", "port": 80, "check": check})


# -- keys -------------------------------------------------------------------------------


def test_keys_in_any_case_and_unknown_keys_ignored() -> None:
    doc = {
        "NAME": "web",
        "Id": "web-2",
        "pOrT": 81,
        "EnableTagOverride": True,
        "Kind": "",
        "Checks": [
            {
                "CheckID": "c1",
                "HTTP": "http://127.0.0.1:81/",
                "Interval": "1s",
                "Timeout": "5s",
                "SuccessBeforePassing": 1,
                "FailuresBeforeCritical": 2,
                "DeregisterCriticalServiceAfter": "1m",
                "Notes": "ignored",
                "TLSSkipVerify": True,
                "Status": "warning",
            }
        ],
    }
    service = parse_service(doc)
    (c,) = service.checks
    assert (service.id, service.port) == ("web-2", 81)
    assert c.check_id == "c1"
    assert c.timeout == 1.0  # longer than the interval: cut to it
    assert (c.success_before_passing, c.failures_before_critical) == (1, 2)
    assert (c.deregister_after, c.status) == (60.0, "warning")


def test_check_and_checks_together_are_all_checks() -> None:
    doc = {
        "name": "web",
        "port": 80,
        "check": {"tcp": "h:80", "interval": "1s"},
        "checks": [{"tcp": "h:81", "interval": "1s"}],
    }
    assert [c.target for c in parse_service(doc).checks] == ["h:80", "h:81"]
    assert [c.check_id for c in parse_service(doc).checks] == ["service:web:1", "service:web:2"]


def test_an_empty_check_object_is_no_check() -> None:
    assert parse_service({"name": "web", "port": 80, "check": {}}).checks == ()


def test_empty_id_and_address_are_the_defaults() -> None:
    service = parse_service({"name": "web", "port": 80, "id": "", "address": ""})
    assert (service.id, service.address) == ("web", None)


def test_meta_and_tags() -> None:
    service = parse_service(
        {"name": "web", "port": 80, "tags": ["v2", "primary"], "meta": {"env": "prod"}}
    )
    assert service.tags == ("v2", "primary")
    assert service.meta == (("env", "prod"),)


def test_services_file_forms() -> None:
    one = {"service": {"name": "a", "port": 1}}
    many = {"Services": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}
    assert [s.id for s in parse_services_file(one)] == ["a"]
    assert [s.id for s in parse_services_file(many)] == ["a", "b"]
    assert parse_services_file({"services": []}) == []


# -- errors name the field --------------------------------------------------------------


def svc(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "port": 80} | fields


SERVICE_ERRORS: list[tuple[Any, str]] = [
    ({"port": 80}, "Name: required"),
    (svc(name="web_1"), "Name: 'web_1' is not a DNS label"),
    (svc(name="-web"), "Name: '-web' is not a DNS label"),
    (svc(name=5), "Name: 5 is not a DNS label"),
    ({"name": "web"}, "Port: required"),
    (svc(port=0), "Port: must be 1..65535"),
    (svc(port=65536), "Port: must be 1..65535"),
    (svc(port="80"), "Port: must be 1..65535"),
    (svc(port=True), "Port: must be 1..65535"),
    (svc(id="a/b"), "ID: 'a/b' does not match"),
    (svc(address="a b"), "Address: 'a b' is not a host name"),
    (svc(address="0.0.0.0"), "Address: '0.0.0.0' is not an address to dial"),
    (svc(tags="v1"), "Tags: must be a list"),
    (svc(tags=["a b"]), "Tags: 'a b' does not match"),
    (svc(tags=[f"t{i}" for i in range(33)]), "Tags: at most 32 tags"),
    (svc(meta=["x"]), "Meta: must be an object"),
    (svc(meta={"k": 1}), "Meta: the value of 'k' must be a string"),
    (svc(meta={"a b": "1"}), "Meta: key 'a b' does not match"),
    (svc(check={"http": "http://h/"}), "Check.Interval: required"),
    (svc(check={"http": "http://h/", "interval": "10"}), "Check.Interval: '10' is not"),
    (svc(check={"http": "http://h/", "interval": "50ms"}), "Check.Interval: must be at"),
    (svc(check={"tcp": "h:1", "interval": "1s", "timeout": "x"}), "Check.Timeout: 'x'"),
    (svc(check={"http": "ftp://h/", "interval": "1s"}), "Check.HTTP: 'ftp://h/' is not"),
    (svc(check={"http": "http://", "interval": "1s"}), "Check.HTTP: 'http://' is not"),
    (svc(check={"http": "http://h:x/", "interval": "1s"}), "Check.HTTP: 'http://h:x/'"),
    (svc(check={"tcp": "h", "interval": "1s"}), "Check.TCP: 'h' is not HOST:PORT"),
    (svc(check={"tcp": "h:1", "http": "http://h/", "interval": "1s"}), "Check: give HTTP"),
    (svc(check={"interval": "1s"}), "Check: needs HTTP"),
    (svc(check="http://h/"), "Check: must be a JSON object"),
    (svc(checks={"tcp": "h:1"}), "Checks: must be a list"),
    (svc(checks=[{"tcp": "h:1", "interval": "1s"}] * 5), "Checks: at most 4 checks"),
    (
        svc(checks=[{"tcp": "h:1", "interval": "1s", "status": "ok"}]),
        "Checks[0].Status: must be passing, warning or critical",
    ),
    (
        svc(checks=[{"tcp": "h:1", "interval": "1s"}, {"tcp": "h:1", "interval": "x"}]),
        "Checks[1].Interval: 'x' is not a duration",
    ),
    (
        svc(check={"tcp": "h:1", "interval": "1s", "SuccessBeforePassing": -1}),
        "Check.SuccessBeforePassing: must be a whole number",
    ),
    (
        svc(check={"tcp": "h:1", "interval": "1s", "failures_before_critical": "3"}),
        "Check.FailuresBeforeCritical: must be a whole number",
    ),
    (
        svc(check={"tcp": "h:1", "interval": "1s", "DeregisterCriticalServiceAfter": "1ms"}),
        "Check.DeregisterCriticalServiceAfter: must be at least 1s",
    ),
    (
        svc(check={"http": "http://h/", "interval": "1s", "method": "GET /"}),
        "Check.Method: 'GET /' is not an HTTP method",
    ),
    (
        svc(check={"http": "http://h/", "interval": "1s", "header": {"X": "v"}}),
        "Check.Header: the value of 'X' must be a list",
    ),
    (
        svc(check={"http": "http://h/", "interval": "1s", "header": {"X": ["a\r\nB: c"]}}),
        "Check.Header: a value of 'X' is not a header value",
    ),
    (
        svc(checks=[{"id": "c", "tcp": "h:1", "interval": "1s"}] * 2),
        "Checks[0].CheckID: 'c' is given to two checks",
    ),
    (svc(Port=81), "'port' and 'Port' are the same key"),
    ("web", "a service definition: must be a JSON object"),
]

# an instances file's errors name the definition too
FILE_ERRORS: list[tuple[Any, str]] = [
    ([], "an instances file is a JSON object"),
    ({"name": "web", "port": 80}, 'an instances file needs a "service" object'),
    ({"services": {"name": "a"}}, "services: must be a list"),
    ({"services": [{"name": "a", "port": 1}, {"name": "b"}]}, "services[1].Port: required"),
    ({"service": {"name": "a", "port": 0}}, "service.Port: must be 1..65535"),
    (
        {"services": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]},
        "services[1].ID: 'a' is already given by services[0]",
    ),
    (
        {"services": [{"name": "a", "id": f"a{i}", "port": 1} for i in range(33)]},
        "services: at most 32 instances",
    ),
]


@pytest.mark.parametrize(
    ("parse", "doc", "message"),
    [(parse_service, *case) for case in SERVICE_ERRORS]
    + [(parse_services_file, *case) for case in FILE_ERRORS],
)
def test_errors_name_the_field(parse: Callable[[Any], Any], doc: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(doc)
    assert str(caught.value).startswith(message), str(caught.value)


# -- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("120000ms", 120.0),
        ("1h2m3s4ms", 3723.004),
        ("2.5m", 150.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("300us", 0.0003),
        ("300\u00b5s", 0.0003),
        ("100ns", 1e-7),
        ("0", 0.0),
        ("+5s", 5.0),
        # a JSON number is nanoseconds, as Consul's CheckType.UnmarshalJSON reads it
        (10_000_000_000, 10.0),
        (1.5e9, 1.5),
        (0, 0.0),
    ],
)
def test_go_durations(value: Any, seconds: float) -> None:
    assert go_duration(value, "Check.Interval") == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    "value", ["", "10", "s", ".s", "1d", "1m30", "10 s", "1e3s", "abc", "-1s", True, None, [1]]
)
def test_bad_durations_name_the_field(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^Check\.Interval: "):
        go_duration(value, "Check.Interval")


def test_a_duration_number_is_nanoseconds_not_seconds() -> None:
    # "interval": 10 is 10 ns to Consul, and so under the 100 ms minimum here
    with pytest.raises(ValueError, match=r"^Check\.Interval: must be at least 100ms"):
        parse_service(svc(check={"tcp": "h:1", "interval": 10}))
