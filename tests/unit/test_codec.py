"""Body codecs (SPEC.md §2): JSON by default, msgpack on request, bytes as base64 in JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest

from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, codec_for
from esdb_gater.shared.core.errors import InvalidRequestError

VALUES: list[Any] = [
    {},
    {"stream_id": "orders-42", "expected_version": -1, "events": [{"event_type": "A", "data": {"n": 1}}]},
    {"nested": {"list": [1, 2.5, None, True, False, "x"], "empty": [], "obj": {}}},
    {"unicode": "ünïcødé 日本語 🎉", "control": "a\tb\nc\x00d"},
    {"big": 2**63 - 1, "small": -(2**63), "zero": 0},
    [1, "two", {"three": 3}],
    "just a string",
    42,
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_json_round_trip(value: Any) -> None:
    assert JSON.decode(JSON.encode(value)) == value


@pytest.mark.parametrize("value", VALUES)
def test_msgpack_round_trip(value: Any) -> None:
    assert MSGPACK.decode(MSGPACK.encode(value)) == value


def test_json_encodes_bytes_as_base64() -> None:
    raw = bytes(range(256))
    encoded = JSON.encode({"data": raw, "view": memoryview(b"\x00\x01"), "arr": bytearray(b"\xff")})
    doc = json.loads(encoded)
    assert base64.b64decode(doc["data"]) == raw
    assert base64.b64decode(doc["view"]) == b"\x00\x01"
    assert base64.b64decode(doc["arr"]) == b"\xff"


def test_msgpack_keeps_bytes_as_bin() -> None:
    raw = bytes(range(256))
    encoded = MSGPACK.encode({"data": raw})
    assert MSGPACK.decode(encoded) == {"data": raw}
    # bin, not str: a plain msgpack reader sees bytes too
    assert msgpack.unpackb(encoded, raw=False) == {"data": raw}


def test_json_is_compact_utf8_without_ascii_escapes() -> None:
    encoded = JSON.encode({"k": "ü"})
    assert encoded == '{"k":"ü"}'.encode()


def test_json_rejects_unserialisable_values() -> None:
    with pytest.raises(TypeError):
        JSON.encode({"x": object()})


def test_json_content_type_names() -> None:
    assert JSON.content_type == "application/json"
    assert MSGPACK.content_type == "application/msgpack"


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_empty_body_decodes_to_empty_object(codec: Any) -> None:
    assert codec.decode(b"") == {}


@pytest.mark.parametrize(
    "data",
    [b"{", b'{"a": }', b"\xff\xfe", b"{'single': 1}", b"[1, 2", b'"unterminated', b"nul"],
    ids=["open-brace", "missing-value", "not-utf8", "single-quotes", "open-list", "open-string", "bare-word"],
)
def test_json_decode_rejects_malformed_body(data: bytes) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        JSON.decode(data)
    assert ei.value.details["field"] == "body"


def test_json_decode_rejects_deep_nesting_as_invalid_request() -> None:
    with pytest.raises(InvalidRequestError) as ei:
        JSON.decode(b"[" * 200_000 + b"]" * 200_000)
    assert ei.value.details["field"] == "body"


def test_json_decode_rejects_huge_integer_literal_as_invalid_request() -> None:
    """Python refuses int literals over 4300 digits with a ValueError; that is a bad body, not a crash."""
    with pytest.raises(InvalidRequestError):
        JSON.decode(b'{"n": ' + b"7" * 5000 + b"}")


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"\x82\xa1a", b"\x92\x01", b"\xd9\x05ab"],
    ids=["reserved-byte", "truncated-map", "truncated-array", "truncated-str"],
)
def test_msgpack_decode_rejects_malformed_body(data: bytes) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        MSGPACK.decode(data)
    assert ei.value.details["field"] == "body"


def test_msgpack_decode_rejects_non_string_map_keys() -> None:
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(msgpack.packb({1: "x"}))


def test_msgpack_decode_rejects_trailing_garbage() -> None:
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(msgpack.packb({"a": 1}) + b"\x01")


# --- codec_for --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"traceparent": "00-abc"}, {CONTENT_TYPE_HEADER: ""}],
    ids=["none", "empty", "other-header", "empty-value"],
)
def test_codec_for_defaults_to_json(headers: dict[str, str] | None) -> None:
    assert codec_for(headers) is JSON


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", JSON),
        ("application/json; charset=utf-8", JSON),
        ("Application/JSON", JSON),
        ("application/msgpack", MSGPACK),
        ("APPLICATION/MSGPACK", MSGPACK),
        (" application/msgpack ", MSGPACK),
        ("application/x-msgpack", MSGPACK),
        ("application/vnd.msgpack", MSGPACK),
        ("application/msgpack; foo=bar", MSGPACK),
    ],
)
def test_codec_for_known_content_types(value: str, expected: Any) -> None:
    assert codec_for({CONTENT_TYPE_HEADER: value}) is expected


def test_codec_for_accepts_lower_case_header_name() -> None:
    assert codec_for({"content-type": "application/msgpack"}) is MSGPACK


@pytest.mark.parametrize(
    "value", ["text/plain", "application/xml", "application/octet-stream", "msgpack", "application/cbor"]
)
def test_codec_for_unknown_content_type_is_invalid_request(value: str) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        codec_for({CONTENT_TYPE_HEADER: value})
    assert ei.value.details["field"] == "Content-Type"
    assert value in ei.value.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_decode_rejects_non_json_number_literals(literal: bytes) -> None:
    """NaN/Infinity are not JSON (RFC 8259): accepting them would store values that a strict
    JSON parser (JavaScript, Go) cannot read back from our replies."""
    with pytest.raises(InvalidRequestError):
        JSON.decode(b'{"data": ' + literal + b"}")


def test_msgpack_timestamp_decodes_to_integer_nanoseconds() -> None:
    """Every decoded value must be answerable in JSON too, so the timestamp extension is an int."""
    body = msgpack.packb({"at": msgpack.Timestamp(1_700_000_000, 5)})
    assert MSGPACK.decode(body) == {"at": 1_700_000_000_000_000_005}


def test_msgpack_other_extension_types_are_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(msgpack.packb({"x": msgpack.ExtType(42, b"\x00")}))
