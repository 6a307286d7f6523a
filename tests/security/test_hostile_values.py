"""Issue 10, "every input gets a reply" (docs/adr/0013-reply-and-target-subjects.md).

Integers outside signed/unsigned 64 bits, non-finite numbers, invalid UTF-8 and lone surrogates
anywhere in a request are ``invalid_request`` naming the field, in JSON and msgpack alike, for
every service (the check is in the codecs); integers at the 64-bit edges are stored and read
back exactly. The issue's reproductions: an integer >= 2**64 in event data or a snapshot
answered ``internal``; a lone surrogate in a ``stream.list`` cursor answered ``internal``; one
in a ``link.get`` name got no reply at all.
"""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)

BIG = "18446744073709551616"  # 2**64: one past what msgpack (and so the log) can hold
UUID = "0190c1a0-0000-7000-8000-000000000001"


def _append_body(data: str) -> bytes:
    return ('{"stream_id":"s","events":[{"event_type":"E","data":' + data + "}]}").encode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"n":' + BIG + "}", "events.0.data.n"),
        ('{"n":-9223372036854775809}', "events.0.data.n"),
        ('{"deep":[1,{"x":' + BIG + "0}]}", "events.0.data.deep.1.x"),
        ('{"f":1e400}', "events.0.data.f"),
        ('{"s":"\\ud800"}', "events.0.data.s"),
        ('{"s":"a\\udfffb"}', "events.0.data.s"),
    ],
)
async def test_append_with_hostile_json_values_is_invalid_request(
    wire: Wire, store: str, data: str, field: str
) -> None:
    details = (await wire.raw(f"esdb.api.{store}.stream.append", _append_body(data))).error("invalid_request")
    assert details["field"] == field
    # nothing was written (the store may not even exist)
    version = await wire.call(store, "version", {"stream_id": "s"})
    assert version.is_error or version.ok() == {"version": -1}


async def test_hostile_value_in_metadata_and_stream_id(wire: Wire, store: str) -> None:
    body = '{"stream_id":"s","events":[{"event_type":"E","data":{},"metadata":{"k":' + BIG + "}}]}"
    details = (await wire.raw(f"esdb.api.{store}.stream.append", body.encode())).error("invalid_request")
    assert details["field"] == "events.0.metadata.k"
    details = (await wire.raw(f"esdb.api.{store}.stream.read", b'{"stream_id":"\\ud800"}')).error("invalid_request")
    assert details["field"] == "stream_id"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_integers_at_the_64_bit_edges_round_trip_exactly(wire: Wire, store: str, codec: str) -> None:
    data = {"max_u": 2**64 - 1, "max_i": 2**63 - 1, "min_i": -(2**63), "pi": 3.5}
    body = {"stream_id": "edges", "events": [{"event_type": "E", "data": data, "metadata": {"m": 2**64 - 1}}]}
    (await wire.call(store, "append", body, codec=codec)).ok()
    for read_codec in ("json", "msgpack"):
        events = (await wire.call(store, "read", {"stream_id": "edges"}, codec=read_codec)).ok()["events"]
        assert events[0]["data"] == data
        assert events[0]["metadata"] == {"m": 2**64 - 1}


def _mp_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A msgpack map from already encoded keys and values (to hand-craft bad values)."""
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def _mp(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


MSGPACK = {"Content-Type": "application/msgpack"}


async def test_msgpack_invalid_utf8_string_is_invalid_request(wire: Wire, store: str) -> None:
    body = _mp_map([(_mp("stream_id"), b"\xa2\xff\xfe")])  # str of two bytes that are not UTF-8
    reply = await wire.raw(f"esdb.api.{store}.stream.read", body, MSGPACK)
    reply.error("invalid_request")
    surrogate = b"\xa3\xed\xa0\x80"  # U+D800 encoded as if it were a character (CESU-style)
    reply = await wire.raw(f"esdb.api.{store}.stream.read", _mp_map([(_mp("stream_id"), surrogate)]), MSGPACK)
    reply.error("invalid_request")


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
async def test_msgpack_non_finite_float_is_invalid_request(wire: Wire, store: str, number: float) -> None:
    data = _mp_map([(_mp("f"), b"\xcb" + struct.pack(">d", number))])
    event = _mp_map([(_mp("event_type"), _mp("E")), (_mp("data"), data)])
    body = _mp_map([(_mp("stream_id"), _mp("s")), (_mp("events"), b"\x91" + event)])
    details = (await wire.raw(f"esdb.api.{store}.stream.append", body, MSGPACK)).error("invalid_request")
    assert details["field"] == "events.0.data.f"


async def test_msgpack_binary_map_key_is_invalid_request(wire: Wire, store: str) -> None:
    event = {"event_type": "E", "data": {b"k": 1}}
    body = msgpack.packb({"stream_id": "s", "events": [event]}, use_bin_type=True)
    details = (await wire.raw(f"esdb.api.{store}.stream.append", body, MSGPACK)).error("invalid_request")
    assert details["field"] == "events.0.data"


async def test_msgpack_timestamp_past_64_bits_is_invalid_request(wire: Wire, store: str) -> None:
    ts = msgpack.Timestamp(2**40, 0)  # decodes to ns since the epoch: more than 64 bits
    body = msgpack.packb({"stream_id": "s", "events": [{"event_type": "E", "data": {"t": ts}}]}, datetime=False)
    details = (await wire.raw(f"esdb.api.{store}.stream.append", body, MSGPACK)).error("invalid_request")
    assert details["field"] == "events.0.data.t"


async def test_snapshot_with_an_integer_past_64_bits_is_invalid_request(wire: Wire, store: str) -> None:
    body = '{"source_uuid":"' + UUID + '","stream_uuid":"' + UUID + '","version":1,"record":{"n":' + BIG + "}}"
    details = (await wire.raw(f"esdb.api.{store}.snapshot.record", body.encode())).error("invalid_request")
    assert details["field"] == "record.n"


async def test_stream_list_cursor_with_a_lone_surrogate_is_invalid_request(wire: Wire, store: str) -> None:
    details = (await wire.raw(f"esdb.api.{store}.stream.list", b'{"cursor":"\\ud800"}')).error("invalid_request")
    assert details["field"] == "cursor"


async def test_link_get_name_with_a_lone_surrogate_gets_a_reply(wire: Wire, store: str) -> None:
    details = (await wire.raw(f"esdb.api.{store}.link.get", b'{"name":"\\ud800"}')).error("invalid_request")
    assert details["field"] == "name"


async def test_channel_payload_with_an_integer_past_64_bits_is_invalid_request(wire: Wire) -> None:
    body = '{"channel":"events","topic":"x","message":{"n":' + BIG + "}}"
    details = (await wire.raw("esdb.api._.channel.publish", body.encode())).error("invalid_request")
    assert details["field"] == "message.n"


@pytest.mark.parametrize(
    "service_op", ["subscription.save", "schema.register", "causation.effects", "scavenger.dry_run"]
)
async def test_every_service_refuses_lone_surrogates(wire: Wire, store: str, service_op: str) -> None:
    reply = await wire.raw(f"esdb.api.{store}.{service_op}", b'{"\\udc00":1}')
    reply.error("invalid_request")


async def test_subject_and_reply_that_are_not_utf8_do_not_silence_a_service(
    wire: Wire, nats_url: str, store: str
) -> None:
    """A raw publish whose subject or reply is not UTF-8 stopped nats-py's read loop for good: the
    service's connection went silent. Now the request is answered (bad store token) or, with a
    reply that is not UTF-8, dropped; the service keeps answering."""
    host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
            b"SUB _INBOX.raw.> 1\r\n"
            b"PUB esdb.api." + store.encode() + b".stream.version _INBOX.\xff\xfe 2\r\n{}\r\n"
            b"PUB esdb.api.\xff\xfe.stream.version _INBOX.raw.1 19\r\n"
            b'{"stream_id":"s-1"}\r\n'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 10)
        while head.startswith((b"PING", b"PONG", b"+OK")):
            head = await asyncio.wait_for(reader.readline(), 10)
        assert head.startswith(b"HMSG _INBOX.raw.1 "), head  # the error reply, with its headers
        size = int(head.split()[-1])
        body = await asyncio.wait_for(reader.readexactly(size + 2), 10)
        assert b"invalid_request" in body
        assert b'"field":"store"' in body
    finally:
        writer.close()
    # the same instance still answers (a dead read loop would time out here)
    reply = await wire.call(store, "version", {"stream_id": "s"})
    assert reply.body is not None
