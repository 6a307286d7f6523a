"""Hostile and malformed requests: every one gets a structured error reply (ADR-32 headers plus
the envelope), never a timeout or a traceback, and nothing is written."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from tests.conftest import Reply, Wire

VICTIM = "victim"
MSGPACK = {"Content-Type": "application/msgpack"}


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _m(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _append(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_id": VICTIM, "events": [{"event_type": "A", "data": {"n": 1}}]}
    body.update(overrides)
    return body


def _event(**overrides: Any) -> dict[str, Any]:
    return _append(events=[{"event_type": "A", **overrides}])


# (id, op, raw body, headers, expected code, field named in details or None)
CASES: list[tuple[str, str, bytes, dict[str, str] | None, str, str | None]] = [
    # malformed bodies
    ("json-truncated", "append", b'{"stream_id": "victim", "events": [', None, "invalid_request", "body"),
    ("json-single-quotes", "append", b"{'stream_id': 'victim'}", None, "invalid_request", "body"),
    ("json-trailing-garbage", "append", _j(_append()) + b"}", None, "invalid_request", "body"),
    ("json-not-utf8", "append", b'{"stream_id": "\xff\xfe"}', None, "invalid_request", "body"),
    ("json-deep-nesting", "append", b"[" * 100_000 + b"]" * 100_000, None, "invalid_request", "body"),
    (
        "json-deep-nesting-in-data",
        "append",
        b'{"stream_id": "victim", "events": [{"event_type": "A", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}",
        None,
        "invalid_request",
        "body",
    ),
    (
        "json-huge-int",
        "append",
        b'{"stream_id": "victim", "expected_version": ' + b"9" * 5000 + b', "events": [{"event_type": "A"}]}',
        None,
        "invalid_request",
        "body",
    ),
    (
        "json-nan",
        "append",
        b'{"stream_id": "victim", "events": [{"event_type": "A", "data": NaN}]}',
        None,
        "invalid_request",
        "body",
    ),
    (
        "json-infinity",
        "append",
        b'{"stream_id": "victim", "events": [{"event_type": "A", "data": {"x": -Infinity}}]}',
        None,
        "invalid_request",
        "body",
    ),
    ("msgpack-reserved-byte", "append", b"\xc1", MSGPACK, "invalid_request", "body"),
    ("msgpack-truncated", "append", _m(_append())[:-3], MSGPACK, "invalid_request", "body"),
    ("msgpack-trailing-garbage", "append", _m(_append()) + b"\x00", MSGPACK, "invalid_request", "body"),
    ("msgpack-int-keys", "append", _m({1: "victim"}), MSGPACK, "invalid_request", "body"),
    ("msgpack-json-body", "append", _j(_append()), MSGPACK, "invalid_request", "body"),
    ("json-msgpack-body", "append", _m(_append()), None, "invalid_request", "body"),
    ("msgpack-bytes-as-json-data", "append", _m(_event(data=b"\x00\x01")), MSGPACK, "invalid_request", None),
    # bodies that are not objects
    ("body-list", "append", b"[]", None, "invalid_request", "body"),
    ("body-list-of-object", "append", _j([_append()]), None, "invalid_request", "body"),
    ("body-number", "append", b"42", None, "invalid_request", "body"),
    ("body-string", "append", b'"victim"', None, "invalid_request", "body"),
    ("body-null", "append", b"null", None, "invalid_request", "body"),
    ("body-true", "append", b"true", None, "invalid_request", "body"),
    ("msgpack-body-list", "append", _m([_append()]), MSGPACK, "invalid_request", "body"),
    ("msgpack-body-int", "append", _m(7), MSGPACK, "invalid_request", "body"),
    # wrong field types
    ("stream-id-int", "append", _j(_append(stream_id=42)), None, "invalid_request", "stream_id"),
    ("stream-id-list", "append", _j(_append(stream_id=["victim"])), None, "invalid_request", "stream_id"),
    ("stream-id-null", "append", _j(_append(stream_id=None)), None, "invalid_request", "stream_id"),
    ("expected-word", "append", _j(_append(expected_version="any")), None, "invalid_request", "expected_version"),
    ("expected-fraction", "append", _j(_append(expected_version=1.5)), None, "invalid_request", "expected_version"),
    ("expected-minus-3", "append", _j(_append(expected_version=-3)), None, "invalid_request", None),
    ("expected-minus-5", "append", _j(_append(expected_version=-5)), None, "invalid_request", None),
    ("events-object", "append", _j(_append(events={"event_type": "A"})), None, "invalid_request", "events"),
    ("events-string", "append", _j(_append(events="A")), None, "invalid_request", "events"),
    ("event-string", "append", _j(_append(events=["A"])), None, "invalid_request", "events.0"),
    ("event-type-int", "append", _j(_append(events=[{"event_type": 5}])), None, "invalid_request", None),
    ("metadata-list", "append", _j(_event(metadata=[1])), None, "invalid_request", None),
    ("tags-string", "append", _j(_event(tags="vip")), None, "invalid_request", None),
    (
        "binary-not-base64",
        "append",
        _j(_event(data="%%%", data_content_type="application/octet-stream")),
        None,
        "invalid_request",
        None,
    ),
    (
        "binary-object",
        "append",
        _j(_event(data={"x": 1}, data_content_type="application/octet-stream")),
        None,
        "invalid_request",
        None,
    ),
    # missing fields
    ("empty-body", "append", b"", None, "invalid_request", None),
    ("empty-object", "append", b"{}", None, "invalid_request", None),
    ("no-stream-id", "append", _j({"events": [{"event_type": "A"}]}), None, "invalid_request", "stream_id"),
    ("no-events", "append", _j({"stream_id": VICTIM}), None, "invalid_request", "events"),
    ("empty-events", "append", _j(_append(events=[])), None, "invalid_request", "events"),
    ("no-event-type", "append", _j(_append(events=[{"data": {}}])), None, "invalid_request", None),
    ("empty-event-type", "append", _j(_event(event_type="")), None, "invalid_request", None),
    ("empty-event-id", "append", _j(_event(event_id="")), None, "invalid_request", None),
    ("empty-stream-id", "append", _j(_append(stream_id="")), None, "invalid_request", "stream_id"),
    ("long-stream-id", "append", _j(_append(stream_id="v" * 257)), None, "invalid_request", "stream_id"),
    ("long-utf8-stream-id", "append", _j(_append(stream_id="é" * 129)), None, "invalid_request", "stream_id"),
    # unknown fields
    ("typo-expected", "append", _j(_append(expected_verison=-1)), None, "invalid_request", "expected_verison"),
    (
        "typo-event-field",
        "append",
        _j(_append(events=[{"event_type": "A", "dat": 1}])),
        None,
        "invalid_request",
        None,
    ),
    ("extra-top-level", "append", _j(_append(store="other")), None, "invalid_request", "store"),
    ("msgpack-unknown-field", "append", _m(_append(force=True)), MSGPACK, "invalid_request", "force"),
    # content types
    (
        "content-type-text",
        "append",
        _j(_append()),
        {"Content-Type": "text/plain"},
        "invalid_request",
        "Content-Type",
    ),
    (
        "content-type-xml",
        "append",
        _j(_append()),
        {"Content-Type": "application/xml"},
        "invalid_request",
        "Content-Type",
    ),
    (
        "content-type-octet",
        "append",
        _j(_append()),
        {"Content-Type": "application/octet-stream"},
        "invalid_request",
        "Content-Type",
    ),
    # too many events in one append
    ("1001-events", "append", _j(_append(events=[{"event_type": "A"}] * 1001)), None, "invalid_request", "events"),
    # read bounds
    ("negative-count", "read", _j({"stream_id": VICTIM, "count": -1}), None, "invalid_request", "count"),
    ("count-10001", "read", _j({"stream_id": VICTIM, "count": 10_001}), None, "invalid_request", "count"),
    (
        "forward-negative",
        "forward",
        _j({"stream_id": VICTIM, "start_version": -1}),
        None,
        "invalid_request",
        "start_version",
    ),
    (
        "backward-minus-2",
        "backward",
        _j({"stream_id": VICTIM, "start_version": -2}),
        None,
        "invalid_request",
        "start_version",
    ),
    (
        "read-direction",
        "read",
        _j({"stream_id": VICTIM, "direction": "sideways"}),
        None,
        "invalid_request",
        "direction",
    ),
    ("list-limit-0", "list", _j({"limit": 0}), None, "invalid_request", "limit"),
    ("list-limit-negative", "list", _j({"limit": -5}), None, "invalid_request", "limit"),
    ("list-cursor-int", "list", _j({"cursor": 5}), None, "invalid_request", "cursor"),
    ("until-no-timestamp", "read_until", _j({"stream_id": VICTIM}), None, "invalid_request", "timestamp"),
    ("range-no-to", "read_range", _j({"stream_id": VICTIM, "from_ts": 0}), None, "invalid_request", "to_ts"),
    (
        "version-at-string",
        "version_at",
        _j({"stream_id": VICTIM, "timestamp": "now"}),
        None,
        "invalid_request",
        "timestamp",
    ),
    ("delete-no-id", "delete", b"{}", None, "invalid_request", "stream_id"),
    ("version-extra", "version", _j({"stream_id": VICTIM, "at": 1}), None, "invalid_request", "at"),
]


async def _assert_nothing_written(wire: Wire, store: str) -> None:
    assert (await wire.call(store, "version", {"stream_id": VICTIM})).ok() == {"version": -1}
    assert (await wire.call(store, "exists", {"stream_id": VICTIM})).ok() == {"exists": False}
    assert (await wire.call(store, "list", {})).ok() == {"streams": [], "next": None}
    info = await wire.call(store, "info", {}, service="store")
    if info.is_error:  # reads create no store (ADR 0016): a refused first write leaves none
        info.error("store_not_found")
    else:
        assert info.ok()["events"] == 0


@pytest.mark.parametrize(
    ("op", "data", "headers", "code", "field"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_hostile_request_gets_structured_error_and_writes_nothing(
    wire: Wire, store: str, op: str, data: bytes, headers: dict[str, str] | None, code: str, field: str | None
) -> None:
    reply = await wire.raw(f"esdb.api.{store}.stream.{op}", data, headers)
    details = reply.error(code)
    if headers == MSGPACK:
        assert reply.headers.get("Content-Type") == "application/msgpack"
    if field is not None:
        named = {details.get("field")} | {e.get("field") for e in details.get("errors", [])}
        assert any(f == field or (f or "").startswith(field + ".") for f in named), details
    await _assert_nothing_written(wire, store)


async def test_a_hostile_request_does_not_disturb_an_existing_stream(wire: Wire, store: str) -> None:
    (await wire.call(store, "append", _append())).ok()
    for _, op, data, headers, code, _ in CASES:
        reply = await wire.raw(f"esdb.api.{store}.stream.{op}", data, headers)
        reply.error(code)
    assert (await wire.call(store, "version", {"stream_id": VICTIM})).ok() == {"version": 0}
    assert (await wire.call(store, "list", {})).ok() == {"streams": [VICTIM], "next": None}


async def test_exactly_1000_events_are_accepted(wire: Wire, store: str) -> None:
    reply = await wire.call(store, "append", _append(events=[{"event_type": "A"}] * 1000))
    assert reply.ok() == {"version": 999, "position": reply.body["position"], "count": 1000}


async def test_exactly_10000_count_is_accepted(wire: Wire, store: str) -> None:
    (await wire.call(store, "append", _append())).ok()
    assert len((await wire.call(store, "read", {"stream_id": VICTIM, "count": 10_000})).ok()["events"]) == 1


async def test_json_content_type_with_parameters_is_accepted(wire: Wire, store: str) -> None:
    reply = await wire.raw(
        f"esdb.api.{store}.stream.append", _j(_append()), {"Content-Type": "application/json; charset=utf-8"}
    )
    assert reply.ok()["version"] == 0


# --- store tokens -----------------------------------------------------------------------------

BAD_STORES = ["_", "bad$store", "a" * 65, "bad%store", "ünï", "bad+store", "bad@store", "bad~store", "bad!"]


async def _js_stream_names(nc: Client) -> list[str]:
    """Every JetStream stream name on the server (the API pages them)."""
    names: list[str] = []
    while True:
        msg = await nc.request("$JS.API.STREAM.NAMES", _j({"offset": len(names)}), timeout=5)
        body = json.loads(msg.data)
        page = body.get("streams") or []
        names.extend(page)
        if not page or len(names) >= body.get("total", 0):
            return names


@pytest.mark.parametrize("bad", BAD_STORES)
@pytest.mark.parametrize("op", ["version", "append", "list"])
async def test_invalid_store_token_is_rejected_and_creates_nothing(wire: Wire, nc: Client, bad: str, op: str) -> None:
    body = {"version": {"stream_id": VICTIM}, "append": _append(), "list": {}}[op]
    reply = await wire.raw(f"esdb.api.{bad}.stream.{op}", _j(body))
    details = reply.error("invalid_request")
    assert details["field"] == "store"
    assert not {f"esdb-log-{bad}", f"esdb-ix-{bad}"} & set(await _js_stream_names(nc))


@pytest.mark.parametrize("bad", ["bad$store", "a" * 65])
async def test_invalid_store_token_for_store_admin(wire: Wire, nc: Client, store: str, bad: str) -> None:
    (await wire.call(store, "create", {}, service="store")).ok()
    assert f"esdb-log-{store}" in await _js_stream_names(nc)  # the check below can see a store
    for op in ("create", "info"):
        reply = await wire.raw(f"esdb.api.{bad}.store.{op}", b"{}")
        assert reply.error("invalid_request")["field"] == "store"
    assert not {f"esdb-log-{bad}", f"esdb-ix-{bad}"} & set(await _js_stream_names(nc))


async def test_longest_valid_store_token_works(wire: Wire) -> None:
    store = "s" + "0123456789abcdef" * 4
    store = store[:64]
    assert (await wire.call(store, "append", _append())).ok()["version"] == 0


# --- size limits --------------------------------------------------------------------------------


async def test_append_too_big_for_one_commit_is_payload_too_large(wire: Wire, nc: Client, store: str) -> None:
    """A request just under max_payload whose commit (events plus generated ids and headers) is
    over it: the service must say payload_too_large and store nothing."""
    n = 1000
    limit = nc.max_payload
    skeleton = len(_j(_append(events=[{"event_type": "A", "data": ""}] * n)))
    per_event = (limit - 4096 - skeleton) // n
    body = _j(_append(events=[{"event_type": "A", "data": "x" * per_event}] * n))
    assert limit - 4096 - n <= len(body) < limit - 4096
    reply = await wire.raw(f"esdb.api.{store}.stream.append", body, wait=20)
    reply.error("payload_too_large")
    await _assert_nothing_written(wire, store)


async def test_reply_too_big_for_one_message_is_payload_too_large(wire: Wire, nc: Client, store: str) -> None:
    """Two events of 3/8 max_payload each, as base64 (4/3 bigger) in a JSON reply, exceed max_payload."""
    size = nc.max_payload * 3 // 8
    blob = base64.b64encode(b"\x01" * size).decode()
    for i in range(2):
        event = {"event_type": "Big", "data": blob, "data_content_type": "application/octet-stream"}
        reply = await wire.call(store, "append", _append(events=[event]), wait=20)
        assert reply.ok()["version"] == i
    reply = await wire.call(store, "read", {"stream_id": VICTIM, "count": 2}, wait=20)
    details = reply.error("payload_too_large")
    assert isinstance(details, dict)
    one = await wire.call(store, "read", {"stream_id": VICTIM, "count": 1}, wait=20)
    assert len(one.ok()["events"]) == 1


async def test_no_reply_subject_gets_no_reply_and_breaks_nothing(wire: Wire, nc: Client, store: str) -> None:
    await nc.publish(f"esdb.api.{store}.stream.append", _j(_append()))
    await nc.flush()
    # the published append had nowhere to reply, but it is still a valid request; what matters is
    # that the service keeps answering afterwards
    reply: Reply = await wire.call(store, "version", {"stream_id": VICTIM})
    assert reply.ok()["version"] in (-1, 0)


@pytest.mark.parametrize("depth", [100, 500, 900, 990])
async def test_deep_but_decodable_data_is_stored_or_rejected_never_internal(wire: Wire, store: str, depth: int) -> None:
    data = b"[" * depth + b"]" * depth
    body = b'{"stream_id": "victim", "events": [{"event_type": "A", "data": ' + data + b"}]}"
    reply = await wire.raw(f"esdb.api.{store}.stream.append", body)
    if reply.is_error:
        reply.error("invalid_request")
        await _assert_nothing_written(wire, store)
        return
    for codec in ("json", "msgpack"):
        read = await wire.call(store, "read", {"stream_id": VICTIM}, codec=codec)
        got = read.ok()["events"][0]["data"]
        for _ in range(depth - 1):
            assert got and isinstance(got, list)
            got = got[0]
        assert got == []


@pytest.mark.parametrize(
    "value",
    [msgpack.Timestamp(1_700_000_000, 5), msgpack.ExtType(42, b"\x00\x01"), 2**64 - 1, -(2**63)],
    ids=["timestamp-ext", "ext-type", "uint64-max", "int64-min"],
)
async def test_exotic_msgpack_data_is_stored_or_rejected_never_internal(wire: Wire, store: str, value: Any) -> None:
    """msgpack can carry values JSON cannot (ext types, timestamps): either the append is refused
    up front, or what was stored can be read back in both codecs."""
    body = _m(_append(events=[{"event_type": "A", "data": {"v": value}}]))
    reply = await wire.raw(f"esdb.api.{store}.stream.append", body, MSGPACK)
    if reply.is_error:
        reply.error("invalid_request")
        await _assert_nothing_written(wire, store)
        return
    for codec in ("json", "msgpack"):
        read = await wire.call(store, "read", {"stream_id": VICTIM}, codec=codec)
        assert len(read.ok()["events"]) == 1, codec


async def test_stream_id_cannot_inject_headers(wire: Wire, store: str) -> None:
    """Error messages quote the stream id; it must not break the ADR-32 header block."""
    sid = "x\r\nNats-Service-Error-Code: 200\r\n\r\nX-Evil: 1\u2028\x85"
    reply = await wire.call(store, "read", {"stream_id": sid})
    reply.error("stream_not_found")
    assert reply.headers["Nats-Service-Error-Code"] == "404"
    assert "X-Evil" not in reply.headers
    assert not any(c in reply.headers["Nats-Service-Error"] for c in "\r\n")
    assert reply.body["error"]["details"]["stream_id"] == sid
