"""shared/config.py: tuning from MESH_* variables, and host:port addresses."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from shared.config import (
    ConfigError,
    Tls,
    Tuning,
    join_address,
    port_number,
    split_address,
)
from shared.http import OPEN_PATHS
from tests.unit.test_wire import GOOD_ADDRESSES

DEFAULTS = {
    "heartbeat_interval": 1.0,
    "heartbeat_timeout": 3.0,
    "handshake_timeout": 5.0,
    "connect_timeout": 1.0,  # not in DESIGN.md's table yet (issue 14; README lists it)
    "retry_base": 0.1,
    "retry_max": 5.0,
    "peer_retry_window": 30.0,
    "request_timeout": 5.0,
    "max_inflight": 1024,
    "max_frame": 1048576,
    "max_connections": 1024,
    "max_members": 10000,
    "max_watchers": 4096,  # MESH_MAX_WATCHERS: blocking queries and event streams
    "drain_seconds": 0.0,
    "gateway_timeout": 30.0,
    "dns_ttl": 0,
    "secret": None,
    "tls": None,
}


def test_defaults_match_the_design_table() -> None:
    tuning = Tuning.from_env({})
    assert dataclasses.asdict(tuning) == DEFAULTS
    assert Tuning.from_env({}) == Tuning()


def test_unrelated_variables_are_ignored() -> None:
    assert Tuning.from_env({"PATH": "/bin", "MESH_PORT": "1", "MESH_NOT_A_KNOB": "x"}) == Tuning()


def test_overrides() -> None:
    tuning = Tuning.from_env(
        {
            "MESH_HEARTBEAT_INTERVAL": "0.25",
            "MESH_HEARTBEAT_TIMEOUT": " 0.5 ",  # surrounding whitespace is fine
            "MESH_HANDSHAKE_TIMEOUT": "2",
            "MESH_CONNECT_TIMEOUT": "0.25",
            "MESH_RETRY_BASE": "0.05",
            "MESH_RETRY_MAX": "1e1",
            "MESH_PEER_RETRY_WINDOW": "3",
            "MESH_REQUEST_TIMEOUT": "7.5",
            "MESH_MAX_INFLIGHT": "8",
            "MESH_MAX_FRAME": "65536",
            "MESH_MAX_CONNECTIONS": "20000",
            "MESH_MAX_MEMBERS": "3",
            "MESH_MAX_WATCHERS": "7",
            "MESH_DRAIN_SECONDS": "0",  # 0 is allowed here: no drain
            "MESH_GATEWAY_TIMEOUT": "12",
            "MESH_DNS_TTL": "0",  # and here: answers are not cached
        }
    )
    assert dataclasses.asdict(tuning) == {
        "heartbeat_interval": 0.25,
        "heartbeat_timeout": 0.5,
        "handshake_timeout": 2.0,
        "connect_timeout": 0.25,
        "retry_base": 0.05,
        "retry_max": 10.0,
        "peer_retry_window": 3.0,
        "request_timeout": 7.5,
        "max_inflight": 8,
        "max_frame": 65536,
        "max_connections": 20000,
        "max_members": 3,
        "max_watchers": 7,
        "drain_seconds": 0.0,
        "gateway_timeout": 12.0,
        "dns_ttl": 0,
        "secret": None,  # from --secret-file or MESH_SECRET(_FILE), not a tuning variable
        "tls": None,  # from MESH_TLS_*, read by Tls.from_env
    }
    assert isinstance(tuning.max_frame, int)
    assert isinstance(tuning.handshake_timeout, float)


def test_one_override_keeps_the_other_defaults() -> None:
    tuning = Tuning.from_env({"MESH_MAX_MEMBERS": "50"})
    assert tuning.max_members == 50
    assert dataclasses.replace(tuning, max_members=10000) == Tuning()


@pytest.mark.parametrize(
    "key, value",
    [
        ("MESH_HEARTBEAT_INTERVAL", "fast"),
        ("MESH_HEARTBEAT_INTERVAL", ""),
        ("MESH_HEARTBEAT_INTERVAL", "0"),
        ("MESH_HEARTBEAT_INTERVAL", "-1"),
        ("MESH_HEARTBEAT_INTERVAL", "nan"),
        ("MESH_HEARTBEAT_TIMEOUT", "inf"),
        ("MESH_RETRY_MAX", "-inf"),
        ("MESH_RETRY_BASE", "1,5"),
        ("MESH_MAX_FRAME", "1.5"),  # an integer knob
        ("MESH_MAX_FRAME", "1e6"),
        ("MESH_MAX_FRAME", "0"),
        ("MESH_MAX_MEMBERS", "-10"),
        ("MESH_MAX_INFLIGHT", "many"),
        ("MESH_MAX_CONNECTIONS", ""),
    ],
)
def test_bad_numbers_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tuning.from_env({key: value})
    message = str(info.value)
    assert key in message
    assert "\n" not in message  # one clear line


@pytest.mark.parametrize(
    "interval, timeout",
    [("1", "1.99"), ("1", "1"), ("2", "3"), ("0.5", "0.9")],
)
def test_heartbeat_timeout_under_twice_the_interval(interval: str, timeout: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tuning.from_env({"MESH_HEARTBEAT_INTERVAL": interval, "MESH_HEARTBEAT_TIMEOUT": timeout})
    assert "MESH_HEARTBEAT_TIMEOUT" in str(info.value)


def test_heartbeat_interval_alone_can_break_the_rule() -> None:
    # the default timeout (3) is under twice an interval of 2
    with pytest.raises(ConfigError):
        Tuning.from_env({"MESH_HEARTBEAT_INTERVAL": "2"})


def test_heartbeat_timeout_exactly_twice_is_fine() -> None:
    tuning = Tuning.from_env({"MESH_HEARTBEAT_INTERVAL": "1.5", "MESH_HEARTBEAT_TIMEOUT": "3"})
    assert (tuning.heartbeat_interval, tuning.heartbeat_timeout) == (1.5, 3.0)


# -- addresses ----------------------------------------------------------------


@pytest.mark.parametrize("address, expected", GOOD_ADDRESSES)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "host",
        "host:",
        ":9000",
        "[]:9000",
        "host:0",
        "host:65536",
        "host:70000",
        "host:-1",
        "host:port",
        "host:+80",
        "",
    ],
)
def test_split_address_refuses_malformed(address: str) -> None:
    with pytest.raises(ConfigError):
        split_address(address)


@pytest.mark.parametrize("address", ["host:\u00b2", "host:\u0669\u0660\u0661\u0660"])
def test_split_address_non_ascii_digit_port_is_a_config_error(address: str) -> None:
    # '\u00b2'.isdigit() is True but int() of it raises ValueError: must be ConfigError
    with pytest.raises(ConfigError):
        split_address(address)


def test_port_number_allows_zero_for_listeners() -> None:
    assert port_number("0") == 0
    assert port_number("9010") == 9010
    assert port_number("65535") == 65535
    for bad in ("65536", "-1", "", "port", "\u00b2", "80 "):
        with pytest.raises(argparse.ArgumentTypeError):
            port_number(bad)


@pytest.mark.parametrize("address", ["::1", "fe80::1", "::1:9010"])
def test_split_address_refuses_unbracketed_ipv6(address: str) -> None:
    # DESIGN: "an IPv6 host is bracketed"; 'fe80::1' is not host 'fe80:' port 1
    with pytest.raises(ConfigError):
        split_address(address)


@pytest.mark.parametrize(
    "host, port, expected",
    [
        ("distributor", 9000, "distributor:9000"),
        ("10.0.0.1", 9010, "10.0.0.1:9010"),
        ("::1", 9010, "[::1]:9010"),
        ("fe80::1:2", 80, "[fe80::1:2]:80"),
    ],
)
def test_join_address_and_round_trip(host: str, port: int, expected: str) -> None:
    assert join_address(host, port) == expected
    assert split_address(expected) == (host, port)


def test_a_secret_without_a_token_keeps_http_on_loopback() -> None:
    from distributor.config import parse

    assert parse([], {}).http_host == "0.0.0.0"
    assert parse([], {"MESH_SECRET": "s"}).http_host == "127.0.0.1"
    assert parse(["--http-host", "0.0.0.0"], {"MESH_SECRET": "s"}).http_host == "0.0.0.0"
    assert parse([], {"MESH_SECRET": "s", "MESH_HTTP_HOST": "10.1.2.3"}).http_host == "10.1.2.3"
    assert parse([], {"MESH_SECRET": "s", "MESH_HTTP_TOKEN": "t"}).http_host == "0.0.0.0"
    config = parse([], {"MESH_SECRET": " s \n", "MESH_HTTP_TOKEN": "t"})
    assert config.tuning.secret == b"s" and config.http_token == "t"


def test_secret_errors() -> None:
    from distributor.config import parse

    with pytest.raises(ConfigError, match="not both"):
        parse([], {"MESH_SECRET": "s", "MESH_SECRET_FILE": "/etc/hostname"})
    with pytest.raises(ConfigError, match="cannot read"):
        parse(["--secret-file", "/nonexistent/secret"], {})
    with pytest.raises(ConfigError, match="empty"):
        parse([], {"MESH_HTTP_TOKEN": "   "})
    with pytest.raises(ConfigError, match="MESH_LOG_LEVEL"):
        parse([], {"MESH_LOG_LEVEL": "chatty"})


def test_tls_is_off_without_its_variables() -> None:
    assert Tls.from_env({"MESH_TLS_CERT": " ", "PATH": "/bin"}) is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MESH_TLS_CERT": "c.pem"}, "MESH_TLS_KEY is unset"),
        ({"MESH_TLS_CERT": "c.pem", "MESH_TLS_KEY": "c.key"}, "MESH_TLS_CA is unset"),
        (
            {"MESH_TLS_CERT": "/no/c.pem", "MESH_TLS_KEY": "/no/c.key", "MESH_TLS_CA": "/no/ca"},
            "cannot load the TLS files",
        ),
    ],
)
def test_a_tls_set_up_that_cannot_work_says_why(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Tls.from_env(env)


@pytest.mark.parametrize("program", ["distributor", "node"])
def test_the_token_help_names_every_open_path(program: str) -> None:
    """--http-token-file's help says which endpoints stay open: the probes, all of them."""
    done = subprocess.run(
        [sys.executable, "-m", program, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # the flag's own entry: from its line to the next flag's
    entry = done.stdout.split("\n  --http-token-file PATH", 1)[1].split("\n  --", 1)[0]
    for path in OPEN_PATHS:
        assert path in entry, entry
