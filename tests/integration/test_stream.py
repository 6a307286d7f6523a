"""The stream service over the wire (SPEC.md §2, §3): every op through ``GaterClient`` and through
raw NATS requests (JSON bodies on ``esdb.api.<store>.stream.<op>``), plus msgpack, binary data,
hostile stream ids and a long stream."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any, Protocol

import msgpack
import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import (
    InvalidRequestError,
    StreamNotFoundError,
    WrongExpectedVersionError,
    error_from_envelope,
)
from tests.conftest import Wire

Event = dict[str, Any]


class Api(Protocol):
    """The stream ops as plain dicts, so one test runs through the client and over raw NATS."""

    async def append(self, store: str, stream_id: str, expected: int | None, events: list[Event]) -> Event: ...
    async def read(
        self, store: str, stream_id: str, start: int, count: int, direction: str = "forward"
    ) -> list[Event]: ...
    async def forward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]: ...
    async def backward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]: ...
    async def version(self, store: str, stream_id: str) -> int: ...
    async def exists(self, store: str, stream_id: str) -> bool: ...
    async def list_page(self, store: str, cursor: str | None, limit: int) -> tuple[list[str], str | None]: ...
    async def delete(self, store: str, stream_id: str) -> None: ...
    async def read_until(
        self, store: str, stream_id: str, ts: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]: ...
    async def read_range(
        self, store: str, stream_id: str, lo: int, hi: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]: ...
    async def version_at(self, store: str, stream_id: str, ts: int) -> int: ...
    async def create_store(self, store: str, **config: Any) -> Event: ...
    async def store_info(self, store: str) -> Event: ...


class ClientApi:
    def __init__(self, client: GaterClient) -> None:
        self.c = client

    async def append(self, store: str, stream_id: str, expected: int | None, events: list[Event]) -> Event:
        if expected is None:
            r = await self.c.append_events(store, stream_id, events)
        else:
            r = await self.c.append_events(store, stream_id, expected, events)
        return r.model_dump()

    async def read(self, store: str, stream_id: str, start: int, count: int, direction: str = "forward") -> list[Event]:
        return [e.model_dump() for e in await self.c.get_events(store, stream_id, start, count, direction)]

    async def forward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]:
        return [e.model_dump() for e in await self.c.stream_forward(store, stream_id, start, count)]

    async def backward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]:
        return [e.model_dump() for e in await self.c.stream_backward(store, stream_id, start, count)]

    async def version(self, store: str, stream_id: str) -> int:
        return await self.c.get_version(store, stream_id)

    async def exists(self, store: str, stream_id: str) -> bool:
        return await self.c.stream_exists(store, stream_id)

    async def list_page(self, store: str, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        return await self.c.list_streams(store, cursor=cursor, limit=limit)

    async def delete(self, store: str, stream_id: str) -> None:
        await self.c.delete_stream(store, stream_id)

    async def read_until(
        self, store: str, stream_id: str, ts: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]:
        events = await self.c.read_until(store, stream_id, ts, direction=direction, limit=limit)
        return [e.model_dump() for e in events]

    async def read_range(
        self, store: str, stream_id: str, lo: int, hi: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]:
        events = await self.c.read_range(store, stream_id, lo, hi, direction=direction, limit=limit)
        return [e.model_dump() for e in events]

    async def version_at(self, store: str, stream_id: str, ts: int) -> int:
        return await self.c.version_at(store, stream_id, ts)

    async def create_store(self, store: str, **config: Any) -> Event:
        return (await self.c.create_store(store, **config)).model_dump()

    async def store_info(self, store: str) -> Event:
        return (await self.c.store_info(store)).model_dump()


class WireApi:
    """Raw JSON requests. Error replies are checked (ADR-32 headers, envelope) and then raised as
    the class their code names, so tests read the same for both transports."""

    def __init__(self, wire: Wire) -> None:
        self.w = wire

    async def _call(self, store: str, op: str, body: Event, service: str = "stream") -> Any:
        reply = await self.w.call(store, op, body, service=service)
        if reply.is_error:
            code = reply.body["error"]["code"] if isinstance(reply.body, dict) else "?"
            reply.error(code)  # shape, headers and status checks
            err = error_from_envelope(reply.body)
            assert int(reply.headers["Nats-Service-Error-Code"]) == err.status
            raise err
        return reply.body

    async def append(self, store: str, stream_id: str, expected: int | None, events: list[Event]) -> Event:
        body: Event = {"stream_id": stream_id, "events": events}
        if expected is not None:
            body["expected_version"] = expected
        out = await self._call(store, "append", body)
        assert set(out) == {"version", "position", "count"}, out
        return out  # type: ignore[no-any-return]

    async def _events(self, store: str, op: str, body: Event) -> list[Event]:
        out = await self._call(store, op, body)
        assert set(out) == {"events"}, out
        return out["events"]  # type: ignore[no-any-return]

    async def read(self, store: str, stream_id: str, start: int, count: int, direction: str = "forward") -> list[Event]:
        body = {"stream_id": stream_id, "start_version": start, "count": count, "direction": direction}
        return await self._events(store, "read", body)

    async def forward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]:
        return await self._events(store, "forward", {"stream_id": stream_id, "start_version": start, "count": count})

    async def backward(self, store: str, stream_id: str, start: int, count: int) -> list[Event]:
        return await self._events(store, "backward", {"stream_id": stream_id, "start_version": start, "count": count})

    async def version(self, store: str, stream_id: str) -> int:
        out = await self._call(store, "version", {"stream_id": stream_id})
        assert set(out) == {"version"}
        return out["version"]  # type: ignore[no-any-return]

    async def exists(self, store: str, stream_id: str) -> bool:
        out = await self._call(store, "exists", {"stream_id": stream_id})
        assert set(out) == {"exists"} and isinstance(out["exists"], bool)
        return out["exists"]

    async def list_page(self, store: str, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        body: Event = {"limit": limit}
        if cursor is not None:
            body["cursor"] = cursor
        out = await self._call(store, "list", body)
        assert set(out) == {"streams", "next"}, out
        return out["streams"], out["next"]

    async def delete(self, store: str, stream_id: str) -> None:
        out = await self._call(store, "delete", {"stream_id": stream_id})
        assert out == {"ok": True}

    async def read_until(
        self, store: str, stream_id: str, ts: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]:
        body = {"stream_id": stream_id, "timestamp": ts, "direction": direction, "limit": limit}
        return await self._events(store, "read_until", body)

    async def read_range(
        self, store: str, stream_id: str, lo: int, hi: int, direction: str = "forward", limit: int = 1000
    ) -> list[Event]:
        body = {"stream_id": stream_id, "from_ts": lo, "to_ts": hi, "direction": direction, "limit": limit}
        return await self._events(store, "read_range", body)

    async def version_at(self, store: str, stream_id: str, ts: int) -> int:
        out = await self._call(store, "version_at", {"stream_id": stream_id, "timestamp": ts})
        assert set(out) == {"version"}
        return out["version"]  # type: ignore[no-any-return]

    async def create_store(self, store: str, **config: Any) -> Event:
        return await self._call(store, "create", config, service="store")  # type: ignore[no-any-return]

    async def store_info(self, store: str) -> Event:
        return await self._call(store, "info", {}, service="store")  # type: ignore[no-any-return]


@pytest.fixture(params=["client", "wire"])
def api(request: pytest.FixtureRequest, client: GaterClient, wire: Wire) -> Api:
    return ClientApi(client) if request.param == "client" else WireApi(wire)


def ev(n: int, **extra: Any) -> Event:
    return {"event_type": "Happened", "data": {"n": n}, **extra}


def versions(events: list[Event]) -> list[int]:
    return [e["version"] for e in events]


def ns(events: list[Event]) -> list[int]:
    return [e["data"]["n"] for e in events]


async def fill(api: Api, store: str, stream_id: str, sizes: list[int]) -> list[Event]:
    """Appends of the given sizes (data n = version); returns the replies."""
    replies = []
    n = 0
    for size in sizes:
        replies.append(await api.append(store, stream_id, None, [ev(n + i) for i in range(size)]))
        n += size
    return replies


# --- append: expected-version modes -----------------------------------------------------------


async def test_append_no_stream_creates_then_conflicts(api: Api, store: str, stream_id: str) -> None:
    r = await api.append(store, stream_id, -1, [ev(0)])
    assert (r["version"], r["count"]) == (0, 1)
    with pytest.raises(WrongExpectedVersionError) as ei:
        await api.append(store, stream_id, -1, [ev(1)])
    assert ei.value.details["expected"] == -1
    assert ei.value.details["actual"] == 0
    assert await api.version(store, stream_id) == 0


async def test_append_stream_exists_requires_an_event(api: Api, store: str, stream_id: str) -> None:
    with pytest.raises(WrongExpectedVersionError) as ei:
        await api.append(store, stream_id, -4, [ev(0)])
    assert (ei.value.details["expected"], ei.value.details["actual"]) == (-4, -1)
    assert await api.version(store, stream_id) == -1
    await api.append(store, stream_id, -1, [ev(0)])
    r = await api.append(store, stream_id, -4, [ev(1), ev(2)])
    assert (r["version"], r["count"]) == (2, 2)


@pytest.mark.parametrize("expected", [-2, None], ids=["explicit-any", "absent"])
async def test_append_any_version_always_appends(api: Api, store: str, stream_id: str, expected: int | None) -> None:
    assert (await api.append(store, stream_id, expected, [ev(0)]))["version"] == 0
    assert (await api.append(store, stream_id, expected, [ev(1)]))["version"] == 1
    assert (await api.append(store, stream_id, expected, [ev(2), ev(3)]))["version"] == 3
    assert ns(await api.read(store, stream_id, 0, 10)) == [0, 1, 2, 3]


async def test_append_exact_version(api: Api, store: str, stream_id: str) -> None:
    with pytest.raises(WrongExpectedVersionError) as ei:
        await api.append(store, stream_id, 0, [ev(0)])
    assert (ei.value.details["expected"], ei.value.details["actual"]) == (0, -1)
    await api.append(store, stream_id, -1, [ev(0)])
    assert (await api.append(store, stream_id, 0, [ev(1), ev(2)]))["version"] == 2
    assert (await api.append(store, stream_id, 2, [ev(3)]))["version"] == 3
    for stale in (0, 2, 4, 100):
        with pytest.raises(WrongExpectedVersionError) as ei:
            await api.append(store, stream_id, stale, [ev(99)])
        assert (ei.value.details["expected"], ei.value.details["actual"]) == (stale, 3)
    assert ns(await api.read(store, stream_id, 0, 10)) == [0, 1, 2, 3]


async def test_append_multi_event_is_atomic(api: Api, store: str, stream_id: str) -> None:
    r = await api.append(store, stream_id, -1, [ev(0), ev(1), ev(2)])
    assert (r["version"], r["count"]) == (2, 3)
    assert isinstance(r["position"], int) and r["position"] > 0
    events = await api.read(store, stream_id, 0, 10)
    assert versions(events) == [0, 1, 2]
    assert {e["epoch_us"] for e in events} == {events[0]["epoch_us"]}
    assert {e["position"] for e in events} == {r["position"]}
    # a failing multi-event append writes none of its events
    with pytest.raises(WrongExpectedVersionError):
        await api.append(store, stream_id, 0, [ev(3), ev(4), ev(5)])
    assert await api.version(store, stream_id) == 2
    assert versions(await api.read(store, stream_id, 0, 10)) == [0, 1, 2]


async def test_append_positions_grow_across_streams(api: Api, store: str) -> None:
    positions = []
    for i in range(6):
        r = await api.append(store, f"s{i % 3}", None, [ev(i)])
        positions.append(r["position"])
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


@pytest.mark.parametrize("mode", ["no_stream", "any", "exists", "exact"])
async def test_append_resend_with_same_event_ids_is_idempotent(api: Api, store: str, stream_id: str, mode: str) -> None:
    if mode in ("exists", "exact"):
        await api.append(store, stream_id, -1, [ev(0, event_id=f"pre-{uuid.uuid4()}")])
    expected = {"no_stream": -1, "any": -2, "exists": -4, "exact": 0}[mode]
    before = await api.version(store, stream_id)
    batch = [ev(10, event_id=f"e-{uuid.uuid4()}"), ev(11, event_id=f"e-{uuid.uuid4()}")]
    first = await api.append(store, stream_id, expected, batch)
    again = await api.append(store, stream_id, expected, batch)
    assert again == first
    assert await api.version(store, stream_id) == before + 2
    events = await api.read(store, stream_id, 0, 100)
    assert [e["event_id"] for e in events].count(batch[0]["event_id"]) == 1
    assert len(events) == before + 3


async def test_append_resend_after_other_appends_returns_original(api: Api, store: str, stream_id: str) -> None:
    """A resend arriving after other writers moved the stream on is still the original append."""
    batch = [ev(0, event_id=f"e-{uuid.uuid4()}")]
    first = await api.append(store, stream_id, -1, batch)
    await api.append(store, stream_id, 0, [ev(1)])
    assert await api.append(store, stream_id, -1, batch) == first
    assert await api.version(store, stream_id) == 1


async def test_append_without_event_ids_is_never_deduplicated(api: Api, store: str, stream_id: str) -> None:
    await api.append(store, stream_id, None, [ev(0)])
    await api.append(store, stream_id, None, [ev(0)])
    events = await api.read(store, stream_id, 0, 10)
    assert versions(events) == [0, 1]
    assert events[0]["event_id"] != events[1]["event_id"]


async def test_append_generates_uuid7_ids_and_keeps_callers(api: Api, store: str, stream_id: str) -> None:
    await api.append(store, stream_id, None, [ev(0), ev(1, event_id="mine.1 $*>")])
    events = await api.read(store, stream_id, 0, 10)
    generated = uuid.UUID(events[0]["event_id"])
    assert generated.version == 7
    assert events[1]["event_id"] == "mine.1 $*>"


async def test_append_duplicate_ids_within_one_append_is_invalid(api: Api, store: str, stream_id: str) -> None:
    with pytest.raises(InvalidRequestError):
        await api.append(store, stream_id, None, [ev(0, event_id="x"), ev(1, event_id="x")])
    assert await api.version(store, stream_id) == -1


async def test_event_fields_round_trip(api: Api, store: str, stream_id: str) -> None:
    sent: list[Event] = [
        {
            "event_type": "Placed",
            "event_id": "id-1",
            "data": {"nested": [1, "two", None, {"x": 1.5}], "ü": "日本語"},
            "metadata": {"causation_id": "c1", "correlation_id": "k1", "schema_version": 2},
            "tags": ["tenant:1", "vip"],
        },
        {"type": "Shipped", "data": [1, 2, 3]},
        {"event_type": "Nothing"},
        {"event_type": "Str", "data": "just text", "metadata_content_type": "application/json"},
    ]
    r = await api.append(store, stream_id, -1, sent)
    events = await api.read(store, stream_id, 0, 10)
    assert len(events) == 4
    keys = {
        "event_id", "event_type", "stream_id", "version", "data", "metadata", "tags",
        "timestamp", "epoch_us", "position", "data_content_type", "metadata_content_type",
    }  # fmt: skip
    for i, e in enumerate(events):
        assert set(e) == keys
        assert e["stream_id"] == stream_id
        assert e["version"] == i
        assert e["position"] == r["position"]
        assert e["timestamp"] == e["epoch_us"] // 1000
        assert e["data_content_type"] == "application/json"
        assert e["metadata_content_type"] == "application/json"
    assert events[0]["event_id"] == "id-1"
    assert events[0]["data"] == sent[0]["data"]
    assert events[0]["metadata"] == sent[0]["metadata"]
    assert events[0]["tags"] == ["tenant:1", "vip"]
    assert (events[1]["event_type"], events[1]["data"], events[1]["tags"]) == ("Shipped", [1, 2, 3], None)
    assert (events[2]["data"], events[2]["metadata"]) == (None, {})
    assert events[3]["data"] == "just text"


async def test_read_event_can_be_appended_back_as_is(api: Api, store: str, stream_id: str) -> None:
    await api.append(store, stream_id, None, [ev(0, metadata={"k": "v"})])
    [read] = await api.read(store, stream_id, 0, 1)
    copy = {**read, "event_id": "copy-1"}
    await api.append(store, "other", None, [copy])
    [back] = await api.read(store, "other", 0, 1)
    assert (back["data"], back["metadata"], back["stream_id"], back["version"]) == ({"n": 0}, {"k": "v"}, "other", 0)


# --- reads ------------------------------------------------------------------------------------

FORWARD_CASES = [
    (0, 10, list(range(10))),
    (0, 100, list(range(10))),
    (0, 1, [0]),
    (3, 4, [3, 4, 5, 6]),
    (2, 2, [2, 3]),
    (4, 1, [4]),
    (8, 5, [8, 9]),
    (9, 1, [9]),
    (10, 5, []),
    (50, 5, []),
    (0, 0, []),
    (5, 0, []),
    (2**62, 5, []),
]

BACKWARD_CASES = [
    (9, 3, [9, 8, 7]),
    (9, 100, list(range(9, -1, -1))),
    (6, 4, [6, 5, 4, 3]),
    (2, 5, [2, 1, 0]),
    (0, 1, [0]),
    (0, 10, [0]),
    (11, 5, [9, 8, 7]),
    (20, 3, []),
    (5, 0, []),
    (2**62, 5, []),
]


async def test_read_forward_semantics(api: Api, store: str, stream_id: str) -> None:
    await fill(api, store, stream_id, [3, 1, 4, 2])  # commits: 0-2, 3, 4-7, 8-9
    for start, count, expected in FORWARD_CASES:
        got = await api.read(store, stream_id, start, count, "forward")
        assert versions(got) == expected, (start, count)
        assert ns(got) == expected
        assert versions(await api.forward(store, stream_id, start, count)) == expected, (start, count)


async def test_read_backward_semantics(api: Api, store: str, stream_id: str) -> None:
    await fill(api, store, stream_id, [3, 1, 4, 2])
    for start, count, expected in BACKWARD_CASES:
        got = await api.read(store, stream_id, start, count, "backward")
        assert versions(got) == expected, (start, count)
        assert ns(got) == expected
        assert versions(await api.backward(store, stream_id, start, count)) == expected, (start, count)


async def test_backward_minus_one_reads_from_the_last_event(api: Api, store: str, stream_id: str) -> None:
    await fill(api, store, stream_id, [2, 3])
    assert versions(await api.backward(store, stream_id, -1, 2)) == [4, 3]
    assert versions(await api.backward(store, stream_id, -1, 100)) == [4, 3, 2, 1, 0]
    assert versions(await api.read(store, stream_id, -1, 1, "backward")) == [4]
    assert await api.backward(store, stream_id, -1, 0) == []


async def test_read_forward_from_minus_one_is_invalid(api: Api, store: str, stream_id: str) -> None:
    await fill(api, store, stream_id, [1])
    with pytest.raises(InvalidRequestError) as ei:
        await api.read(store, stream_id, -1, 5, "forward")
    assert ei.value.details["field"] == "start_version"


@pytest.mark.parametrize("op", ["read", "read_backward", "forward", "backward", "backward_last", "until", "range"])
async def test_reads_of_a_missing_stream_are_stream_not_found(api: Api, store: str, op: str) -> None:
    await api.append(store, "present", None, [ev(0)])  # the store exists; the stream does not
    calls = {
        "read": lambda: api.read(store, "absent", 0, 10),
        "read_backward": lambda: api.read(store, "absent", 5, 10, "backward"),
        "forward": lambda: api.forward(store, "absent", 0, 10),
        "backward": lambda: api.backward(store, "absent", 3, 10),
        "backward_last": lambda: api.backward(store, "absent", -1, 10),
        "until": lambda: api.read_until(store, "absent", 2**62),
        "range": lambda: api.read_range(store, "absent", 0, 2**62),
    }
    with pytest.raises(StreamNotFoundError):
        await calls[op]()


async def test_read_more_than_a_batch_pages_transparently(api: Api, store: str, stream_id: str) -> None:
    await api.append(store, stream_id, None, [ev(i) for i in range(1000)])
    await api.append(store, stream_id, None, [ev(1000 + i) for i in range(1000)])
    for i in range(5):
        await api.append(store, stream_id, None, [ev(2000 + i)])
    got = await api.read(store, stream_id, 0, 2005)
    assert versions(got) == list(range(2005))
    got = await api.read(store, stream_id, 998, 1004, "forward")
    assert versions(got) == list(range(998, 2002))
    got = await api.read(store, stream_id, 2004, 2005, "backward")
    assert versions(got) == list(range(2004, -1, -1))


# --- version / exists ---------------------------------------------------------------------------


async def test_version_and_exists(api: Api, store: str, stream_id: str) -> None:
    assert await api.version(store, stream_id) == -1
    assert await api.exists(store, stream_id) is False
    await api.append(store, stream_id, None, [ev(0), ev(1)])
    assert await api.version(store, stream_id) == 1
    assert await api.exists(store, stream_id) is True
    await api.append(store, stream_id, None, [ev(2)])
    assert await api.version(store, stream_id) == 2
    assert await api.version(store, stream_id + "x") == -1


# --- list ---------------------------------------------------------------------------------------

LIST_IDS = [
    "a", "a.b", "a%2Eb", "a.*", "a.>", "b", "B", "a b", "s$ys", "z", "ü", "日本", "🎉", "0", "_", "-",
    "orders-1", "orders-10", "orders-2", "Zeta", "x" * 256, "a\tb", "~", "%", "a..b",
]  # fmt: skip


async def _collect_pages(api: Api, store: str, limit: int) -> list[list[str]]:
    pages = []
    cursor: str | None = None
    while True:
        page, cursor = await api.list_page(store, cursor, limit)
        pages.append(page)
        assert len(page) <= limit
        if cursor is None:
            return pages
        assert len(pages) < 100, "list does not terminate"


async def test_list_is_sorted_and_paginated(api: Api, store: str) -> None:
    await asyncio.gather(*(api.append(store, sid, None, [ev(0)]) for sid in LIST_IDS))
    expected = sorted(LIST_IDS)  # code point order == UTF-8 byte order
    for limit in (1, 4, 7, 24, 25, 26, 1000):
        pages = await _collect_pages(api, store, limit)
        flat = [s for p in pages for s in p]
        assert flat == expected, limit
        assert all(len(p) == limit for p in pages[:-1]), limit
        assert len(pages) == max(1, -(-len(expected) // limit)), limit


async def test_list_of_an_empty_store(api: Api, store: str) -> None:
    assert await api.list_page(store, None, 10) == ([], None)


async def test_list_cursor_need_not_be_an_existing_id(api: Api, store: str) -> None:
    for sid in ("a", "a.b", "b", "c"):
        await api.append(store, sid, None, [ev(0)])
    assert await api.list_page(store, "zzz", 10) == ([], None)
    assert await api.list_page(store, "", 10) == (["a", "a.b", "b", "c"], None)
    assert await api.list_page(store, "a-", 10) == (["a.b", "b", "c"], None)
    assert await api.list_page(store, "a.b", 1) == (["b"], "b")
    assert await api.list_page(store, "bb", 10) == (["c"], None)


async def test_list_counts_each_stream_once(api: Api, store: str) -> None:
    for i in range(3):
        await api.append(store, "many", None, [ev(i)])
    await api.append(store, "one", None, [ev(0)])
    assert await api.list_page(store, None, 10) == (["many", "one"], None)


async def test_client_get_streams_follows_pages(client: GaterClient, store: str) -> None:
    ids = [f"s{i:02d}" for i in range(12)]
    for sid in ids:
        await client.append_events(store, sid, [ev(0)])
    assert await client.get_streams(store, page_size=5) == ids


# --- delete -------------------------------------------------------------------------------------


async def test_delete_stream(api: Api, store: str, stream_id: str) -> None:
    await api.append(store, stream_id, None, [ev(0), ev(1)])
    await api.append(store, "keep", None, [ev(0)])
    await api.delete(store, stream_id)
    assert await api.version(store, stream_id) == -1
    assert await api.exists(store, stream_id) is False
    with pytest.raises(StreamNotFoundError):
        await api.read(store, stream_id, 0, 10)
    assert (await api.list_page(store, None, 10))[0] == ["keep"]
    assert await api.version(store, "keep") == 0
    # deleting again, or a stream that never existed, is fine
    await api.delete(store, stream_id)
    await api.delete(store, "never-existed")
    # and the stream can be started again from scratch (its old version means nothing now)
    with pytest.raises(WrongExpectedVersionError) as ei:
        await api.append(store, stream_id, 1, [ev(7)])
    assert ei.value.details["actual"] == -1
    r = await api.append(store, stream_id, -1, [ev(7)])
    assert r["version"] == 0
    assert ns(await api.read(store, stream_id, 0, 10)) == [7]


async def test_delete_touches_no_look_alike_stream(api: Api, store: str) -> None:
    ids = ["a", "a.b", "a%2Eb", "a.*", "a.>", "a b", "A"]
    for sid in ids:
        await api.append(store, sid, None, [ev(0)])
    await api.delete(store, "a")
    await api.delete(store, "a.*")
    for sid in ids:
        expected = -1 if sid in ("a", "a.*") else 0
        assert await api.version(store, sid) == expected, sid
    assert (await api.list_page(store, None, 100))[0] == sorted(set(ids) - {"a", "a.*"})


# --- temporal -----------------------------------------------------------------------------------


async def test_temporal_queries(api: Api, store: str, stream_id: str) -> None:
    await fill(api, store, stream_id, [2, 1, 3, 1])  # A: 0-1, B: 2, C: 3-5, D: 6
    events = await api.read(store, stream_id, 0, 10)
    t = [events[i]["epoch_us"] for i in (0, 2, 3, 6)]
    ta, tb, tc, td = t
    assert ta < tb < tc < td, t
    assert events[1]["epoch_us"] == ta and events[5]["epoch_us"] == tc

    # version_at: the last version whose epoch_us <= t
    assert await api.version_at(store, stream_id, ta - 1) == -1
    assert await api.version_at(store, stream_id, 0) == -1
    assert await api.version_at(store, stream_id, ta) == 1
    assert await api.version_at(store, stream_id, tb - 1) == 1
    assert await api.version_at(store, stream_id, tb) == 2
    assert await api.version_at(store, stream_id, tc) == 5
    assert await api.version_at(store, stream_id, td - 1) == 5
    assert await api.version_at(store, stream_id, td) == 6
    assert await api.version_at(store, stream_id, td + 10**9) == 6
    assert await api.version_at(store, "missing", td) == -1

    # read_until: epoch_us <= t, forward or backward, at most limit
    assert versions(await api.read_until(store, stream_id, ta - 1)) == []
    assert versions(await api.read_until(store, stream_id, ta)) == [0, 1]
    assert versions(await api.read_until(store, stream_id, tb)) == [0, 1, 2]
    assert versions(await api.read_until(store, stream_id, tb, "backward")) == [2, 1, 0]
    assert versions(await api.read_until(store, stream_id, tc, "forward", 2)) == [0, 1]
    assert versions(await api.read_until(store, stream_id, tc, "backward", 2)) == [5, 4]
    assert versions(await api.read_until(store, stream_id, td + 10**9)) == list(range(7))
    assert await api.read_until(store, stream_id, td, "forward", 0) == []

    # read_range: from_ts <= epoch_us <= to_ts
    assert versions(await api.read_range(store, stream_id, tb, tc)) == [2, 3, 4, 5]
    assert versions(await api.read_range(store, stream_id, tb, tc, "backward")) == [5, 4, 3, 2]
    assert versions(await api.read_range(store, stream_id, tb, tc, "forward", 3)) == [2, 3, 4]
    assert versions(await api.read_range(store, stream_id, tb, tc, "backward", 3)) == [5, 4, 3]
    assert versions(await api.read_range(store, stream_id, tb, tb)) == [2]
    assert versions(await api.read_range(store, stream_id, ta + 1, tc - 1)) == [2]
    assert versions(await api.read_range(store, stream_id, 0, ta - 1)) == []
    assert versions(await api.read_range(store, stream_id, td + 1, td + 10**9)) == []
    assert versions(await api.read_range(store, stream_id, 0, 2**62)) == list(range(7))
    assert await api.read_range(store, stream_id, ta, td, "forward", 0) == []

    # timestamps far outside the server's clock range (the largest a request may hold: integers
    # past 64 bits are invalid_request, issue 10 / ADR 0013)
    far = 2**63 - 1
    assert await api.version_at(store, stream_id, -(10**18)) == -1
    assert await api.version_at(store, stream_id, far) == 6
    assert await api.read_until(store, stream_id, -1) == []
    assert versions(await api.read_until(store, stream_id, far)) == list(range(7))
    assert await api.read_range(store, stream_id, -(10**18), -1) == []
    assert await api.read_range(store, stream_id, far - 1, far) == []
    assert versions(await api.read_range(store, stream_id, -(10**18), far)) == list(range(7))
    with pytest.raises(InvalidRequestError):
        await api.version_at(store, stream_id, 2**70)


async def test_temporal_queries_on_interleaved_streams(api: Api, store: str, stream_id: str) -> None:
    """Time lookups must only see the asked stream's commits."""
    for i in range(6):
        await api.append(store, "noise", None, [ev(i)])
        await api.append(store, stream_id, None, [ev(i)])
    events = await api.read(store, stream_id, 0, 10)
    noise = await api.read(store, "noise", 0, 10)
    for i, e in enumerate(events):
        assert await api.version_at(store, stream_id, e["epoch_us"]) == i
        # just before a noise commit that follows this event: still this version
        assert await api.version_at(store, stream_id, noise[i]["epoch_us"] - 1) == i - 1
    got = await api.read_range(store, stream_id, noise[2]["epoch_us"], noise[4]["epoch_us"])
    assert versions(got) == [2, 3]


# --- stores -------------------------------------------------------------------------------------


async def test_store_create_and_info(api: Api, store: str) -> None:
    info = await api.create_store(store, storage="memory", max_age_s=3600, duplicate_window_s=60)
    assert info["store"] == store
    assert info["created"] is True
    assert (info["storage"], info["replicas"], info["max_age_s"], info["max_bytes"]) == ("memory", 1, 3600, -1)
    assert info["duplicate_window_s"] == 60
    assert (info["events"], info["streams"]) == (0, 0)

    again = await api.create_store(store, storage="memory", max_age_s=3600, duplicate_window_s=60)
    assert again["created"] is False

    await api.append(store, "s1", None, [ev(0), ev(1), ev(2)])
    await api.append(store, "s2", None, [ev(0)])
    await api.append(store, "s1", None, [ev(3)])
    info = await api.store_info(store)
    assert info["store"] == store
    assert info["created"] is False
    assert info["storage"] == "memory"
    assert info["events"] == 3  # stored appends (commits), per StoreInfoResponse
    assert info["streams"] == 2


async def test_store_create_with_service_defaults(api: Api, store: str) -> None:
    info = await api.create_store(store)
    assert info["created"] is True
    assert (info["storage"], info["replicas"], info["max_age_s"], info["max_bytes"]) == ("file", 1, 0, -1)
    assert info["duplicate_window_s"] == 120
    assert (await api.create_store(store))["created"] is False


async def test_store_info_of_an_auto_created_store(api: Api, store: str) -> None:
    await api.append(store, "s", None, [ev(0)])
    info = await api.store_info(store)
    assert (info["store"], info["storage"], info["replicas"], info["streams"], info["events"]) == (
        store,
        "file",
        1,
        1,
        1,
    )
    assert (await api.create_store(store))["created"] is False


async def test_store_create_rejects_bad_config(api: Api, store: str) -> None:
    for bad in ({"replicas": 0}, {"storage": "tape"}, {"max_age_s": -1}, {"replica": 1}):
        with pytest.raises(InvalidRequestError):
            await api.create_store(store, **bad)


async def test_store_create_with_a_max_age_below_the_duplicate_window(api: Api, store: str) -> None:
    """JetStream refuses a duplicate window longer than max age: the default window shrinks to
    fit, an explicit one that does not fit is invalid_request (it used to be internal)."""
    with pytest.raises(InvalidRequestError) as ei:
        await api.create_store(store, max_age_s=5, duplicate_window_s=60)
    assert ei.value.details["field"] == "duplicate_window_s"
    info = await api.create_store(store, max_age_s=5)
    assert (info["created"], info["max_age_s"], info["duplicate_window_s"]) == (True, 5, 5)


# --- error replies on the wire --------------------------------------------------------------------


async def test_error_reply_carries_headers_and_envelope(wire: Wire, store: str) -> None:
    await wire.call(store, "append", {"stream_id": "s", "events": [ev(0)]})
    reply = await wire.call(store, "append", {"stream_id": "s", "expected_version": 5, "events": [ev(1)]})
    details = reply.error("wrong_expected_version")
    assert reply.headers["Nats-Service-Error-Code"] == "409"
    assert (details["expected"], details["actual"]) == (5, 0)
    assert reply.body["error"]["retryable"] is False

    reply = await wire.call(store, "read", {"stream_id": "nope"})
    reply.error("stream_not_found")
    assert reply.headers["Nats-Service-Error-Code"] == "404"

    reply = await wire.call(store, "read", {"stream_id": "s", "count": 10_001})
    details = reply.error("invalid_request")
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert details["field"] == "count"
    assert details["reason"]


async def test_success_reply_has_no_error_headers(wire: Wire, store: str) -> None:
    reply = await wire.call(store, "version", {"stream_id": "s"})
    assert not reply.is_error
    assert reply.body == {"version": -1}
    assert json.loads(reply.data) == {"version": -1}


# --- msgpack and binary data -----------------------------------------------------------------------

BLOB = bytes(range(256)) * 4 + b"\x00\xff\xc1"


async def test_msgpack_client_round_trip(msgpack_client: GaterClient, store: str, stream_id: str) -> None:
    r = await msgpack_client.append_events(store, stream_id, -1, [ev(0), ev(1, metadata={"k": "ü"})])
    assert (r.version, r.count) == (1, 2)
    events = await msgpack_client.stream_forward(store, stream_id, 0, 10)
    assert [e.data for e in events] == [{"n": 0}, {"n": 1}]
    assert events[1].metadata == {"k": "ü"}
    assert await msgpack_client.get_version(store, stream_id) == 1
    assert await msgpack_client.stream_exists(store, stream_id) is True
    assert await msgpack_client.get_streams(store) == [stream_id]
    with pytest.raises(WrongExpectedVersionError) as ei:
        await msgpack_client.append_events(store, stream_id, -1, [ev(2)])
    assert ei.value.details["actual"] == 1


async def test_raw_msgpack_request_gets_msgpack_reply(wire: Wire, store: str, stream_id: str) -> None:
    reply = await wire.call(store, "append", {"stream_id": stream_id, "events": [ev(0)]}, codec="msgpack")
    assert reply.headers.get("Content-Type") == "application/msgpack"
    assert reply.ok()["version"] == 0
    reply = await wire.call(store, "read", {"stream_id": stream_id}, codec="msgpack")
    assert reply.headers.get("Content-Type") == "application/msgpack"
    assert msgpack.unpackb(reply.data, raw=False)["events"][0]["data"] == {"n": 0}


async def test_raw_msgpack_error_reply_is_msgpack(wire: Wire, store: str) -> None:
    reply = await wire.call(store, "read", {"stream_id": "absent"}, codec="msgpack")
    assert reply.headers.get("Content-Type") == "application/msgpack"
    reply.error("stream_not_found")


@pytest.mark.parametrize("sent_as", ["json-base64", "msgpack-bin"])
async def test_binary_data_round_trips(
    wire: Wire, client: GaterClient, store: str, stream_id: str, sent_as: str
) -> None:
    if sent_as == "json-base64":
        data: Any = base64.b64encode(BLOB).decode()
        codec = "json"
    else:
        data, codec = BLOB, "msgpack"
    event = {"event_type": "Blob", "data": data, "data_content_type": "application/octet-stream"}
    (await wire.call(store, "append", {"stream_id": stream_id, "events": [event]}, codec=codec)).ok()

    as_json = (await wire.call(store, "read", {"stream_id": stream_id})).ok()["events"][0]
    assert as_json["data_content_type"] == "application/octet-stream"
    assert isinstance(as_json["data"], str)
    assert base64.b64decode(as_json["data"]) == BLOB

    as_msgpack = (await wire.call(store, "read", {"stream_id": stream_id}, codec="msgpack")).ok()["events"][0]
    assert as_msgpack["data"] == BLOB

    [via_client] = await client.stream_forward(store, stream_id, 0, 1)
    assert via_client.data == BLOB


async def test_msgpack_client_binary_data(msgpack_client: GaterClient, store: str, stream_id: str) -> None:
    await msgpack_client.append_events(
        store, stream_id, [{"event_type": "Blob", "data": BLOB, "data_content_type": "image/png"}]
    )
    [got] = await msgpack_client.stream_forward(store, stream_id, 0, 1)
    assert got.data == BLOB
    assert got.data_content_type == "image/png"


# --- hostile stream ids ----------------------------------------------------------------------------

HOSTILE_IDS = [
    "a", "a.b", "a%2Eb", "a%2eb", "a.*", "a.>", "a.b.c", "*", ">", ".", "..", "a..b", "a b", " a", "a ",
    "a$", "x.$JS.API.STREAM.NAMES", "%", "%25", "ünïcødé", "日本語", "🎉", "a\tb", "a\nb", "a\x00b",
    "x" * 256, "é" * 128, "A", "a-b", "a_b",
]  # fmt: skip
# ids starting with "$" are the services' (ADR 0016): tests/security/test_reserved_and_quotas.py


async def test_hostile_stream_ids_round_trip_and_stay_isolated(api: Api, store: str) -> None:
    for i, sid in enumerate(HOSTILE_IDS):
        r = await api.append(store, sid, -1, [{"event_type": "Mine", "data": {"id": sid, "i": i}}])
        assert r["version"] == 0, sid
    for i, sid in enumerate(HOSTILE_IDS):
        events = await api.read(store, sid, 0, 100)
        assert len(events) == 1, sid
        assert events[0]["stream_id"] == sid
        assert events[0]["data"] == {"id": sid, "i": i}
        assert await api.version(store, sid) == 0
        assert await api.exists(store, sid) is True
        back = await api.backward(store, sid, -1, 100)
        assert [e["data"]["id"] for e in back] == [sid]
    # a second event in one stream shows up nowhere else
    await api.append(store, "a.*", 0, [{"event_type": "Mine", "data": {"id": "a.*", "i": -1}}])
    for sid in HOSTILE_IDS:
        assert await api.version(store, sid) == (1 if sid == "a.*" else 0), sid
    pages = await _collect_pages(api, store, 7)
    assert [s for p in pages for s in p] == sorted(HOSTILE_IDS)


@pytest.mark.parametrize("sid", ["a.*", "a.>", ">", "*", "ünï.*"])
async def test_wildcard_ids_do_not_read_siblings(api: Api, store: str, sid: str) -> None:
    siblings = ["a", "a.b", "a.c.d", "ünï.x", "b"]
    for s in siblings:
        await api.append(store, s, None, [{"event_type": "Other", "data": {"id": s}}])
    with pytest.raises(StreamNotFoundError):
        await api.read(store, sid, 0, 100)
    assert await api.version(store, sid) == -1
    assert await api.exists(store, sid) is False
    await api.append(store, sid, -1, [{"event_type": "Mine", "data": {"id": sid}}])
    assert [e["data"]["id"] for e in await api.read(store, sid, 0, 100)] == [sid]
    assert await api.version_at(store, sid, 2**62) == 0
    assert [e["data"]["id"] for e in await api.read_until(store, sid, 2**62)] == [sid]
    for s in siblings:
        assert [e["data"]["id"] for e in await api.read(store, s, 0, 100)] == [s]


async def test_hostile_ids_over_msgpack(wire: Wire, store: str) -> None:
    for sid in ("a.b", "a%2Eb", "ü.*", "x" * 256):
        r = await wire.call(store, "append", {"stream_id": sid, "events": [ev(0)]}, codec="msgpack")
        assert r.ok()["version"] == 0
        events = (await wire.call(store, "read", {"stream_id": sid}, codec="msgpack")).ok()["events"]
        assert [e["stream_id"] for e in events] == [sid]


# --- a long stream ---------------------------------------------------------------------------------


async def test_long_stream_reads_from_the_middle(client: GaterClient, store: str, stream_id: str) -> None:
    """2000 single-event appends (ANY, concurrent) interleaved with another stream's appends, so
    versions and log sequences differ; reads from the middle must land on the right versions."""
    n, noise_n = 2000, 300
    sem = asyncio.Semaphore(64)
    version_of: dict[int, int] = {}

    async def one(i: int) -> None:
        async with sem:
            r = await client.append_events(store, stream_id, -2, [{"event_type": "T", "data": {"i": i}}])
            version_of[i] = r.version

    async def noise(i: int) -> None:
        async with sem:
            await client.append_events(store, "noise", [{"event_type": "N", "data": {"i": i}}])

    await asyncio.gather(*(one(i) for i in range(n)), *(noise(i) for i in range(noise_n)))
    assert sorted(version_of.values()) == list(range(n))
    marker_at = {v: i for i, v in version_of.items()}

    async def check(events: list[Any], expected: list[int]) -> None:
        assert [e.version for e in events] == expected
        assert [e.data["i"] for e in events] == [marker_at[v] for v in expected]

    await check(await client.stream_forward(store, stream_id, 1000, 10), list(range(1000, 1010)))
    await check(await client.stream_forward(store, stream_id, 1234, 1), [1234])
    await check(await client.stream_forward(store, stream_id, 1, 3), [1, 2, 3])
    await check(await client.stream_forward(store, stream_id, 1990, 20), list(range(1990, 2000)))
    await check(await client.stream_backward(store, stream_id, 1500, 5), [1500, 1499, 1498, 1497, 1496])
    await check(await client.stream_backward(store, stream_id, -1, 3), [1999, 1998, 1997])
    await check(await client.get_events(store, stream_id, 250, 1500), list(range(250, 1750)))
    await check(await client.get_events(store, stream_id, 1777, 1200, "backward"), list(range(1777, 577, -1)))
    await check(await client.stream_forward(store, stream_id, 0, 2000), list(range(2000)))
    await check(await client.stream_backward(store, stream_id, 1999, 2000), list(range(1999, -1, -1)))
    assert await client.stream_forward(store, stream_id, 2000, 10) == []
    assert await client.get_version(store, stream_id) == n - 1
    assert await client.get_version(store, "noise") == noise_n - 1
    for v in (0, 1, 999, 1000, 1999):
        [e] = await client.stream_forward(store, stream_id, v, 1)
        assert await client.version_at(store, stream_id, e.epoch_us) >= v


async def _count_log_requests(nc: Client, store: str, action: Any) -> int:
    """How many JetStream API requests on the store's log the action caused (seen on the wire)."""
    seen = 0

    async def count(_msg: Any) -> None:
        nonlocal seen
        seen += 1

    sub = await nc.subscribe(f"$JS.API.*.*.esdb-log-{store}", cb=count)
    sub2 = await nc.subscribe(f"$JS.API.*.*.*.esdb-log-{store}", cb=count)
    await nc.flush()
    try:
        await action()
        await nc.flush()
    finally:
        await sub.unsubscribe()
        await sub2.unsubscribe()
    return seen


async def test_reading_the_middle_of_a_long_stream_is_not_a_scan(
    client: GaterClient, nc: Client, store: str, stream_id: str
) -> None:
    """SPEC §3: reading a range costs O(log n) in the stream's length, not a scan from version 0.
    1600 single-event commits with a burst of 1200 other commits in the middle (so the versions are
    not spread evenly over the log); one event must take a few dozen JetStream requests at most."""
    sem = asyncio.Semaphore(64)

    async def one(sid: str, i: int) -> None:
        async with sem:
            await client.append_events(store, sid, [{"event_type": "T", "data": {"i": i}}])

    await asyncio.gather(*(one(stream_id, i) for i in range(800)))
    await asyncio.gather(*(one("burst", i) for i in range(1200)))
    await asyncio.gather(*(one(stream_id, i) for i in range(800, 1600)))
    for v in (1, 500, 799, 800, 801, 1234, 1598):
        got: list[Any] = []

        async def read(v: int = v, got: list[Any] = got) -> None:
            got.extend(await client.stream_forward(store, stream_id, v, 1))

        requests = await _count_log_requests(nc, store, read)
        assert [e.version for e in got] == [v]
        assert requests >= 1 and requests <= 40, f"reading version {v} took {requests} JetStream requests"

    # time lookups are no scans either
    [mid] = await client.stream_forward(store, stream_id, 1234, 1)
    found: list[Any] = []

    async def by_time() -> None:
        found.append(await client.version_at(store, stream_id, mid.epoch_us))
        found.append(await client.read_range(store, stream_id, mid.epoch_us, mid.epoch_us))

    requests = await _count_log_requests(nc, store, by_time)
    assert found[0] == 1234
    assert [e.version for e in found[1]] == [1234]
    assert requests >= 1 and requests <= 60, f"version_at + read_range took {requests} JetStream requests"


# --- idempotency keys never alias another append ------------------------------------------------


async def test_same_event_id_in_two_streams_is_two_events(api: Api, store: str) -> None:
    r1 = await api.append(store, "one", None, [ev(1, event_id="shared-id")])
    r2 = await api.append(store, "two", None, [ev(2, event_id="shared-id")])
    assert r2["position"] != r1["position"]
    assert ns(await api.read(store, "one", 0, 10)) == [1]
    assert ns(await api.read(store, "two", 0, 10)) == [2]


async def test_nul_in_ids_cannot_alias_another_streams_append(api: Api, store: str) -> None:
    """(stream "a", event id "b<NUL>c") and (stream "a<NUL>b", event id "c") are different appends."""
    r1 = await api.append(store, "a", None, [ev(1, event_id="b\x00c")])
    r2 = await api.append(store, "a\x00b", None, [ev(2, event_id="c")])
    assert r2["position"] != r1["position"]
    assert await api.version(store, "a\x00b") == 0
    assert ns(await api.read(store, "a\x00b", 0, 10)) == [2]


async def test_nul_in_ids_cannot_alias_another_append_of_the_same_stream(api: Api, store: str, stream_id: str) -> None:
    """Event ids ["x<NUL>y"] and ["x", "y"] are different appends."""
    await api.append(store, stream_id, None, [ev(1, event_id="x\x00y")])
    r = await api.append(store, stream_id, None, [ev(2, event_id="x"), ev(3, event_id="y")])
    assert (r["version"], r["count"]) == (2, 2)
    assert ns(await api.read(store, stream_id, 0, 10)) == [1, 2, 3]
