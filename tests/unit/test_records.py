"""Member records' services, tags and meta: their limits, from flags, env, HTTP and peers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from node.config import parse
from shared.config import ConfigError
from shared.wire import (
    MAX_META,
    MAX_META_VALUE,
    MAX_RECORD,
    MAX_SERVICES,
    MAX_TAGS,
    PROTOCOL_VERSION,
    Hello,
    Member,
    ProtocolError,
    Update,
    decode,
    encode,
    labels,
    meta_pairs,
)

BASE = {"id": "id-a", "name": "alpha", "address": "10.0.0.1:9010", "incarnation": 1}


def record(**fields: Any) -> Member:
    return Member.from_dict({**BASE, **fields})


# -- labels and meta -------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "goods", "v2", "zone-a", "A.b_c-9", "x" * 63, "9lives"])
def test_good_labels(name: str) -> None:
    assert labels([name], "services", MAX_SERVICES) == (name,)


@pytest.mark.parametrize(
    "name", ["", "-a", ".a", "_a", "a b", "a/b", "x" * 64, "é", "a\n", 5, None, ["a"]]
)
def test_bad_labels(name: Any) -> None:
    with pytest.raises(ValueError, match="does not match"):
        labels([name], "services", MAX_SERVICES)


def test_label_lists_keep_order_and_refuse_repeats_and_excess() -> None:
    assert labels(["b", "a", "c"], "tags", MAX_TAGS) == ("b", "a", "c")
    with pytest.raises(ValueError, match="twice"):
        labels(["a", "b", "a"], "tags", MAX_TAGS)
    assert len(labels([f"t{i}" for i in range(MAX_TAGS)], "tags", MAX_TAGS)) == MAX_TAGS
    with pytest.raises(ValueError, match=f"at most {MAX_TAGS} tags"):
        labels([f"t{i}" for i in range(MAX_TAGS + 1)], "tags", MAX_TAGS)
    with pytest.raises(ValueError, match="list"):
        labels("goods", "services", MAX_SERVICES)  # a string is not a list of names
    with pytest.raises(ValueError, match="list"):
        labels({"goods": 1}, "services", MAX_SERVICES)  # nor is a map (its keys)


def test_meta_limits() -> None:
    assert meta_pairs({"zone-a": "x", "k": ""}) == (("zone-a", "x"), ("k", ""))
    assert meta_pairs({"k": "é" * (MAX_META_VALUE // 2)})  # 512 bytes of UTF-8
    with pytest.raises(ValueError, match="over 512 bytes"):
        meta_pairs({"k": "é" * (MAX_META_VALUE // 2) + "x"})
    with pytest.raises(ValueError, match=f"at most {MAX_META} meta keys"):
        meta_pairs({f"k{i}": "" for i in range(MAX_META + 1)})
    with pytest.raises(ValueError, match="does not match"):
        meta_pairs({"bad key": "x"})
    with pytest.raises(ValueError, match="must be a string"):
        meta_pairs({"k": 5})
    with pytest.raises(ValueError, match="object"):
        meta_pairs([["k", "v"]])


# -- the record on the wire ------------------------------------------------------------


def test_a_full_record_round_trips_and_an_empty_one_stays_small() -> None:
    full = record(
        http="10.0.0.1:9110",
        services=["goods"],
        tags=["v2"],
        meta={"zone-a": "x"},
        draining=True,
    )
    assert Member.from_dict(orjson.loads(orjson.dumps(full.to_dict()))) == full
    assert full.document()["meta"] == {"zone-a": "x"}
    # nothing to say, nothing sent: a storm sends every record to every node
    assert set(record().to_dict()) == set(BASE)
    assert record().document() == {
        **BASE,
        "http": None,
        "services": [],
        "tags": [],
        "meta": {},
        "draining": False,
        "instances": [],
    }


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"services": "goods"}, "list"),
        ({"services": ["a b"]}, "does not match"),
        ({"services": [f"s{i}" for i in range(33)]}, "at most 32"),
        ({"tags": [1]}, "does not match"),
        ({"meta": {"k": 1}}, "string"),
        ({"meta": [["k", "v"]]}, "object"),
        ({"meta": {f"k{i}": "v" * 200 for i in range(60)}}, f"over {MAX_RECORD}"),
        ({"draining": "yes"}, "boolean"),
        ({"http": "no-port"}, "host:port"),
    ],
)
def test_a_bad_record_from_a_peer_is_a_protocol_error(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        record(**fields)
    hello = {"type": "hello", "version": 2, "min_version": 1, **BASE, **fields}
    with pytest.raises(ProtocolError, match=why):
        decode(orjson.dumps(hello))
    with pytest.raises(ProtocolError, match=why):
        decode(orjson.dumps({"type": "update", "member": {**BASE, **fields}}))


def test_a_version_1_hello_reads_as_offering_nothing() -> None:
    """Recorded from a node of the previous release (protocol version 1)."""
    recorded = (
        b'{"type":"hello","version":1,"min_version":1,"id":"5f0c","name":"old",'
        b'"address":"10.0.0.9:9010","incarnation":3,"nonce":""}'
    )
    hello = decode(recorded)
    assert isinstance(hello, Hello)
    assert hello.member == Member("5f0c", "old", "10.0.0.9:9010", 3)
    assert (hello.member.services, hello.member.tags, hello.member.meta) == ((), (), ())
    assert hello.member.http is None and hello.member.draining is False


def test_a_new_hello_keeps_the_fields_a_version_1_reader_needs() -> None:
    """What a version-1 node reads of our hello: its fields, with the same types."""
    ours = Hello.of(record(services=["goods"], http="10.0.0.1:9110"))
    body = orjson.loads(encode(ours))
    assert body["version"] == PROTOCOL_VERSION and body["min_version"] == 1
    assert {k: body[k] for k in BASE} == BASE
    assert isinstance(body["nonce"], str)


def test_update_round_trips() -> None:
    update = Update(record(services=["goods"], draining=True))
    assert decode(encode(update)) == update


# -- flags and environment -------------------------------------------------------------


def test_flags_and_env() -> None:
    config = parse(
        ["--service", "goods", "--service", "stock", "--tag", "v2", "--meta", "k=v=w"],
        {"MESH_SERVICES": "ignored", "MESH_TAGS": "a,b", "MESH_META": "x=1"},
    )
    # a flag replaces its variable's list; `k=v=w` gives k the value v=w
    assert config.services == ("goods", "stock")
    assert config.tags == ("v2",)
    assert config.meta == (("k", "v=w"),)
    config = parse([], {"MESH_SERVICES": " goods , stock ", "MESH_META": "zone-a=x,owner=me"})
    assert config.services == ("goods", "stock")
    assert config.meta == (("zone-a", "x"), ("owner", "me"))
    assert parse([], {}).services == ()


@pytest.mark.parametrize(
    "argv, env, why",
    [
        (["--service", "bad name"], {}, "does not match"),
        (["--tag=-x"], {}, "does not match"),
        (["--meta", "novalue"], {}, "KEY=VALUE"),
        (["--meta", "k=1", "--meta", "k=2"], {}, "twice"),
        (["--service", "a", "--service", "a"], {}, "twice"),
        ([], {"MESH_SERVICES": ",".join(f"s{i}" for i in range(33))}, "at most 32"),
        ([], {"MESH_META": "k=" + "v" * 513}, "over 512 bytes"),
        ([], {"MESH_META": ",".join(f"k{i}={'v' * 500}" for i in range(20))}, "over 8192"),
    ],
)
def test_bad_flags_are_one_line_start_up_errors(
    argv: list[str], env: dict[str, str], why: str
) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        parse(argv, env)
    assert "\n" not in str(info.value)


# -- instances: services outside the node, in its record --------------------------------

WEB = {"id": "web-1", "service": "web", "address": "10.0.0.7", "port": 8080, "health": "passing"}


def test_instances_round_trip_in_both_wire_forms() -> None:
    full = record(instances=[{**WEB, "tags": ["v2"], "meta": {"zone": "a"}}, {**WEB, "id": "w2"}])
    assert [i.health for i in full.instances] == ["passing", "passing"]
    assert Member.from_dict(orjson.loads(orjson.dumps(full.to_dict()))) == full
    assert Member.from_wire(orjson.loads(orjson.dumps(full.to_array()))) == full
    assert full.document()["instances"][0] == {**WEB, "tags": ["v2"], "meta": {"zone": "a"}}


def test_a_version_3_peer_gets_instances_in_an_object_it_reads_past() -> None:
    """A version-3 reader refuses an array of ten fields, and reads a batch's object as a
    departure: it gets the record as an object, whose unknown keys it ignores."""
    full = record(services=["goods"], instances=[WEB])
    assert isinstance(full.to_wire(3), dict) and full.to_wire(3)["instances"] == [WEB]
    assert isinstance(full.to_wire(PROTOCOL_VERSION), list)
    assert len(full.to_array()) == 10 and len(record(services=["goods"]).to_array()) == 6


@pytest.mark.parametrize(
    "bad, why",
    [
        ({**WEB, "service": "no_underscore"}, "DNS label"),
        ({**WEB, "service": "-x"}, "DNS label"),
        ({**WEB, "port": 0}, "port"),
        ({**WEB, "port": True}, "port"),
        ({**WEB, "health": "fine"}, "health"),
        ({**WEB, "id": "a/b"}, "instance id"),
        ({**WEB, "address": "a b"}, "address"),
        ({**WEB, "tags": "v2"}, "tags"),
    ],
)
def test_a_bad_instance_from_a_peer_is_a_protocol_error(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        record(instances=[bad])


def test_instances_are_limited_in_number_ids_and_size() -> None:
    with pytest.raises(ProtocolError, match="at most 32 instances"):
        record(instances=[{**WEB, "id": f"w{i}"} for i in range(33)])
    with pytest.raises(ProtocolError, match="listed twice"):
        record(instances=[WEB, WEB])
    # 32 KiB with instances (8 KiB without): 32 instances with their meta fit, more does not
    meta = {f"k{i}": "v" * 100 for i in range(8)}
    fits = record(instances=[{**WEB, "id": f"w{i}", "meta": meta} for i in range(32)])
    assert len(orjson.dumps(fits.to_dict())) > MAX_RECORD
    with pytest.raises(ProtocolError, match="over 32768"):
        record(
            instances=[{**WEB, "id": f"w{i}", "meta": {**meta, "x": "v" * 200}} for i in range(32)]
        )
