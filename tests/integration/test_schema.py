"""The schema service over the wire and automatic upcasting in the stream service (SPEC.md §6):
every op and error, chain validation, older versions, a v1 → v2 → v3 chain read back through
every stream read and ``upcast_events``, JSON Schema validation on append (nothing written), and
a schema change reaching another service instance without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.services.schema import service
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import InvalidRequestError, NotFoundError, StoreNotFoundError
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.upcasting.registry import SchemaRegistry
from tests.conftest import Wire

# Paid v1 {"amt": 5, "who": "Ada Lovelace", "status": "P"}
#   -> v2 {"amount": 5, "payer": {"first": "Ada", "last": "Lovelace"}, "status": "P"}
#   -> v3 {"amount": "5", "currency": "EUR", "payer": {...}, "status": "paid"}
V2: dict[str, Any] = {
    "version": 2,
    "description": "amount renamed, payer split",
    "upcast_from": {
        "1": [
            {"op": "rename", "from": "amt", "to": "amount"},
            {"op": "split", "path": "who", "separator": " ", "into": ["payer.first", "payer.last"]},
        ]
    },
}
V3: dict[str, Any] = {
    "version": 3,
    "json_schema": {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {"amount": {"type": "string"}, "currency": {"type": "string", "minLength": 3}},
    },
    "upcast_from": {
        "2": [
            {"op": "convert", "path": "amount", "to": "string"},
            {"op": "add", "path": "currency", "value": "EUR"},
            {"op": "map", "path": "status", "table": {"P": "paid", "R": "refunded"}, "default": "unknown"},
        ]
    },
}
V1_DATA = [
    {"amt": 5, "who": "Ada Lovelace", "status": "P"},
    {"amt": 7, "who": "Grace Hopper", "status": "R"},
    {"amt": 9, "who": "Alan", "status": "?"},
]
V3_DATA = [
    {"amount": "5", "currency": "EUR", "payer": {"first": "Ada", "last": "Lovelace"}, "status": "paid"},
    {"amount": "7", "currency": "EUR", "payer": {"first": "Grace", "last": "Hopper"}, "status": "refunded"},
    {"amount": "9", "currency": "EUR", "payer": {"first": "Alan", "last": ""}, "status": "unknown"},
]


def test_schema_subjects_are_pinned() -> None:
    spec = service.spec(schemas=None)  # type: ignore[arg-type]  # the table needs no store
    assert spec.name == "esdb-schema" and spec.token == "schema"
    assert [Subjects().api_endpoint(spec.token, op.name) for op in spec.ops] == [
        "esdb.api.*.schema.register",
        "esdb.api.*.schema.get",
        "esdb.api.*.schema.list",
        "esdb.api.*.schema.unregister",
        "esdb.api.*.schema.upcast",
    ]
    assert all(op.description for op in spec.ops)


async def test_register_get_list_and_older_versions(client: GaterClient, store: str) -> None:
    first = await client.register_schema(store, "Paid", {"version": 1, "description": "first"})
    assert (first.event_type, first.version, first.current_version, first.versions) == ("Paid", 1, 1, [1])
    assert first.registered_at > 0 and first.upcast_from == {}
    await client.register_schema(store, "Paid", V2)
    r3 = await client.register_schema(store, "Paid", V3)
    assert (r3.version, r3.current_version, r3.versions) == (3, 3, [1, 2, 3])
    current = await client.get_schema(store, "Paid")
    assert current.version == 3 and current.json_schema == V3["json_schema"]
    assert current.upcast_from == V3["upcast_from"]
    older = await client.get_schema(store, "Paid", 2)
    assert (older.version, older.description, older.current_version) == (2, V2["description"], 3)
    assert older.upcast_from == V2["upcast_from"]
    assert (await client.get_schema(store, "Paid", 1)).description == "first"
    await client.register_schema(store, "Alpha", {"version": 1})
    listed = await client.list_schemas(store)
    assert [(s.event_type, s.version, s.versions) for s in listed] == [("Alpha", 1, [1]), ("Paid", 3, [1, 2, 3])]
    # re-registering a version replaces it
    await client.register_schema(store, "Alpha", {"version": 1, "description": "again"})
    assert (await client.get_schema(store, "Alpha")).description == "again"


async def test_get_errors(client: GaterClient, store: str) -> None:
    with pytest.raises(NotFoundError) as exc:
        await client.get_schema(store, "Nope")
    assert exc.value.details == {"event_type": "Nope"}
    await client.register_schema(store, "Paid", V2 | {"upcast_from": {"1": []}})
    with pytest.raises(NotFoundError) as exc:
        await client.get_schema(store, "Paid", 1)
    assert exc.value.details == {"event_type": "Paid", "version": 1, "versions": [2]}


async def test_unregister(client: GaterClient, store: str) -> None:
    await client.register_schema(store, "Paid", V2)
    await client.register_schema(store, "Paid", V3)
    with pytest.raises(InvalidRequestError) as exc:  # v3 needs v2's steps from 1 to 2
        await client.unregister_schema(store, "Paid", 2)
    assert exc.value.details["field"] == "version" and exc.value.details["from_version"] == 1
    await client.unregister_schema(store, "Paid", 3)
    assert (await client.get_schema(store, "Paid")).versions == [2]
    await client.unregister_schema(store, "Paid", 7)  # not registered: fine
    await client.unregister_schema(store, "Paid")
    with pytest.raises(NotFoundError):
        await client.get_schema(store, "Paid")
    assert await client.list_schemas(store) == []
    await client.unregister_schema(store, "Paid")  # again: fine
    await client.register_schema(store, "Paid", {"version": 1})  # and it can come back
    assert (await client.get_schema(store, "Paid")).version == 1


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("gap", {"version": 3, "upcast_from": {"2": []}}, "schema.upcast_from", "1 to 2"),
    ("key-too-high", {"version": 2, "upcast_from": {"2": []}}, "schema.upcast_from", ""),
    ("unknown-op", {"version": 2, "upcast_from": {"1": [{"op": "explode"}]}}, "schema.upcast_from.1.0", ""),
    (
        "empty-path",
        {"version": 2, "upcast_from": {"1": [{"op": "remove", "path": ""}]}},
        "schema.upcast_from.1.0.remove.path",
        "",
    ),
    (
        "bad-json-schema",
        {"version": 1, "json_schema": {"type": "whatever"}},
        "schema.json_schema",
        "not a valid JSON Schema",
    ),
    ("version-zero", {"version": 0}, "schema.version", ""),
    ("unknown-key", {"version": 1, "fields": ["a"]}, "schema.fields", ""),
]


@pytest.mark.parametrize(("schema", "field", "says"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_bad_schemas_are_rejected_naming_the_problem(
    wire: Wire, store: str, schema: dict[str, Any], field: str, says: str
) -> None:
    reply = await wire.call(store, "register", {"event_type": "Paid", "schema": schema}, service="schema")
    details = reply.error("invalid_request")
    assert details["field"].startswith(field), details
    assert says in reply.body["error"]["message"] + details.get("reason", "")
    nothing = await wire.call(store, "get", {"event_type": "Paid"}, service="schema")
    nothing.error("not_found")


async def test_the_v1_v2_v3_chain(client: GaterClient, wire: Wire, store: str, stream_id: str) -> None:
    await client.append_events(store, stream_id, [{"event_type": "Paid", "data": d} for d in V1_DATA[:2]])
    await client.append_events(store, stream_id, [{"event_type": "Paid", "data": V1_DATA[2]}])
    await client.append_events(store, stream_id, [{"event_type": "Noted", "data": {"amt": 1}}])
    ts = (await client.stream_forward(store, stream_id, 0, 10))[-1].epoch_us
    await client.register_schema(store, "Paid", V2)
    await client.register_schema(store, "Paid", V3)

    def paid(events: list[Any]) -> list[Any]:
        return [(e.data, e.metadata) for e in events if e.event_type == "Paid"]

    want = [(d, {"schema_version": 3}) for d in V3_DATA]
    assert paid(await client.stream_forward(store, stream_id, 0, 10)) == want
    assert paid(await client.get_events(store, stream_id, 0, 10)) == want
    assert paid(await client.get_events(store, stream_id, 3, 10, "backward")) == want[::-1]
    assert paid(await client.stream_backward(store, stream_id, -1, 10)) == want[::-1]
    assert paid(await client.read_until(store, stream_id, ts)) == want
    assert paid(await client.read_range(store, stream_id, 0, ts)) == want
    other = (await client.stream_forward(store, stream_id, 3, 1))[0]
    assert (other.data, other.metadata) == ({"amt": 1}, {})  # a type without a schema is untouched
    # raw: the stored form
    raw = await client.stream_forward(store, stream_id, 0, 10, raw=True)
    assert paid(raw) == [(d, {}) for d in V1_DATA]
    for op, extra, order in (
        ("read", {}, V1_DATA),
        ("backward", {"start_version": -1}, V1_DATA[::-1]),
        ("read_until", {"timestamp": ts}, V1_DATA),
        ("read_range", {"from_ts": 0, "to_ts": ts}, V1_DATA),
    ):
        events = (await wire.call(store, op, {"stream_id": stream_id, "raw": True, **extra})).ok()["events"]
        assert [e["data"] for e in events if e["event_type"] == "Paid"] == order, op
        assert all("schema_version" not in e["metadata"] for e in events)
    # explicitly, through the schema service: RecordedEvents and plain dicts
    upcast = await client.upcast_events(store, raw)
    assert paid(upcast) == want and upcast[3].data == {"amt": 1}
    dicts = await client.upcast_events(
        store,
        [
            {"event_type": "Paid", "data": V1_DATA[0], "extra": "kept"},
            {"type": "Paid", "data": {"amount": 1}, "metadata": {"schema_version": 2, "k": "v"}},
            {"event_type": "Paid", "data": {"amount": "1", "currency": "NOK"}, "metadata": {"schema_version": 3}},
        ],
    )
    assert dicts[0] == {"event_type": "Paid", "data": V3_DATA[0], "metadata": {"schema_version": 3}, "extra": "kept"}
    assert dicts[1]["data"] == {"amount": "1", "currency": "EUR"}  # no status: map does nothing
    assert dicts[1]["metadata"] == {"schema_version": 3, "k": "v"}
    assert dicts[2]["data"] == {"amount": "1", "currency": "NOK"}
    # the stored events were never rewritten
    assert paid(await client.stream_forward(store, stream_id, 0, 10, raw=True)) == [(d, {}) for d in V1_DATA]


async def test_upcast_errors(wire: Wire, store: str) -> None:
    missing = await wire.call(store, "upcast", {"events": [{"data": {}}]}, service="schema")
    assert missing.error("invalid_request")["field"] == "events.0.event_type"
    bad_md = await wire.call(store, "upcast", {"events": [{"event_type": "X", "metadata": 5}]}, service="schema")
    assert bad_md.error("invalid_request")["field"] == "events.0.metadata"
    empty = await wire.call(store, "upcast", {"events": []}, service="schema")
    assert empty.ok() == {"events": []}


PAID_V1 = {
    "version": 1,
    "json_schema": {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}, "note": {"type": "string"}},
    },
}


async def test_append_validates_data_against_the_json_schema(client: GaterClient, store: str, stream_id: str) -> None:
    await client.register_schema(store, "Paid", PAID_V1)
    good = {"event_type": "Paid", "data": {"amount": 3}}
    with pytest.raises(InvalidRequestError) as exc:
        await client.append_events(store, stream_id, [good, {"event_type": "Paid", "data": {"amount": -1}}])
    d = exc.value.details
    assert (d["field"], d["event_type"], d["schema_version"]) == ("events.1.data.amount", "Paid", 1)
    assert await client.get_version(store, stream_id) == -1  # nothing of that append was written
    with pytest.raises(InvalidRequestError) as exc:
        await client.append_events(store, stream_id, [{"event_type": "Paid", "data": {"note": "no amount"}}])
    assert exc.value.details["field"] == "events.0.data.amount"
    with pytest.raises(InvalidRequestError) as exc:
        await client.append_events(
            store, stream_id, [{"event_type": "Paid", "data": {"amount": 1}, "metadata": {"schema_version": 2}}]
        )
    assert exc.value.details["field"] == "events.0.metadata.schema_version"
    assert await client.get_version(store, stream_id) == -1
    r = await client.append_events(store, stream_id, [good, {"event_type": "Other", "data": "anything"}])
    assert r.version == 1


async def test_append_rejection_over_the_wire(wire: Wire, store: str, stream_id: str) -> None:
    await wire.call(store, "register", {"event_type": "Paid", "schema": PAID_V1}, service="schema")
    body = {"stream_id": stream_id, "events": [{"event_type": "Paid", "data": {"amount": "3"}}]}
    reply = await wire.call(store, "append", body)
    details = reply.error("invalid_request")
    assert details["field"] == "events.0.data.amount" and "number" in details["reason"]
    assert details["errors"] == [{"field": "events.0.data.amount", "reason": details["reason"]}]
    assert (await wire.call(store, "version", {"stream_id": stream_id})).ok() == {"version": -1}


async def _until(check: Any, within: float = 3.0) -> float:
    """Seconds until ``await check()`` is true (fails after ``within`` seconds)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, "not seen in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_schema_change_reaches_other_instances_without_restart(
    client: GaterClient, nats_url: str, store: str, stream_id: str
) -> None:
    await client.append_events(store, stream_id, [{"event_type": "Paid", "data": V1_DATA[0]}])
    await client.register_schema(store, "Paid", V2)
    settings = Settings(nats_url=nats_url, auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0))
    other = await start_services(["stream"], settings)
    nc2 = await jetstream.connect(nats_url)
    log2 = Log(nc2)
    await log2.start()
    bare = SchemaRegistry(log2, Subjects())
    try:
        registries = [bare] + [r for r in other.resources if isinstance(r, SchemaRegistry)]
        assert len(registries) == 2
        for reg in registries:  # both load the store now, before the change
            assert (await reg.schemas(store)).current_version("Paid") == 2
        await client.register_schema(store, "Paid", V3)
        for reg in registries:

            async def seen(reg: SchemaRegistry = reg) -> bool:
                return (await reg.schemas(store)).current_version("Paid") == 3

            assert await _until(seen) < 2.0
        # reads answered by either instance are upcast to v3
        for _ in range(20):
            events = await client.stream_forward(store, stream_id, 0, 1)
            assert (events[0].data, events[0].metadata) == (V3_DATA[0], {"schema_version": 3})
        await client.unregister_schema(store, "Paid", 3)
        for reg in registries:

            async def reverted(reg: SchemaRegistry = reg) -> bool:
                return (await reg.schemas(store)).current_version("Paid") == 2

            await _until(reverted)
    finally:
        await bare.stop()
        await log2.stop()
        await nc2.close()
        await other.stop()


# --- stores that must exist ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def strict(nats_url: str) -> AsyncIterator[Running]:
    """Stream and schema services that do not create stores on first use (prefix ``strict2``)."""
    settings = Settings(nats_url=nats_url, subject_prefix="strict2", service_name_prefix="strict2")
    running = await start_services(["stream", "schema"], settings)
    try:
        yield running
    finally:
        await running.stop()


async def test_store_must_exist_without_auto_create(strict: Running, nc: Client, store: str) -> None:
    client = GaterClient(nc, prefix="strict2")
    for call in (
        client.register_schema(store, "Paid", {"version": 1}),
        client.get_schema(store, "Paid"),
        client.list_schemas(store),
        client.unregister_schema(store, "Paid"),
        client.upcast_events(store, [{"event_type": "Paid", "data": {}}]),
    ):
        with pytest.raises(StoreNotFoundError) as exc:
            await call
        assert exc.value.details == {"store": store}
    await client.create_store(store)
    await client.register_schema(store, "Paid", V2 | {"upcast_from": {"1": [{"op": "set", "path": "v", "value": 2}]}})
    await client.append_events(store, "s", [{"event_type": "Paid", "data": {}}])
    assert (await client.stream_forward(store, "s", 0, 1))[0].data == {"v": 2}
