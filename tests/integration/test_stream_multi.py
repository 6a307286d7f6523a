"""``stream.append_multi``, ``stream.checkpoint`` and ``stream.read_all`` over the wire (issue 12,
docs/adr/0023-multi-stream-append-and-read-all.md): atomicity, conflicts, the checkpoint's
compare-and-set, idempotent resends, what reads, subscriptions and the causation index see,
read_all paging in both directions with filters, notification ids, and hostile input."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import Delivery, GaterClient
from esdb_gater.shared.core.settings import StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.stores import log_stream_config
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)

SHIFT = 14


def ev(t: str = "E", data: Any = None, eid: str | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"event_type": t, "data": data if data is not None else {}}
    if eid is not None:
        e["event_id"] = eid
    if meta is not None:
        e["metadata"] = meta
    return e


def app(sid: str, expected: int | None, *events: dict[str, Any]) -> dict[str, Any]:
    a: dict[str, Any] = {"stream_id": sid, "events": list(events)}
    if expected is not None:
        a["expected_version"] = expected
    return a


async def multi(wire: Wire, store: str, appends: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = await wire.call(store, "append_multi", {"appends": appends, **extra})
    return r.ok()  # type: ignore[no-any-return]


async def multi_error(wire: Wire, store: str, body: dict[str, Any], code: str) -> dict[str, Any]:
    return (await wire.call(store, "append_multi", body)).error(code)


async def forward(wire: Wire, store: str, sid: str) -> list[dict[str, Any]]:
    r = await wire.call(store, "forward", {"stream_id": sid, "count": 1000})
    if r.is_error:
        r.error("stream_not_found")
        return []
    return r.ok()["events"]  # type: ignore[no-any-return]


async def read_all(wire: Wire, store: str, **req: Any) -> dict[str, Any]:
    return (await wire.call(store, "read_all", req)).ok()  # type: ignore[no-any-return]


async def messages(wire: Wire, store: str) -> int:
    return int((await wire.call(store, "info", {}, service="store")).ok()["events"])


# --- append_multi ------------------------------------------------------------------------------------


async def test_three_streams_in_one_transaction(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("b", None, ev("Old"))])
    r = await multi(
        wire,
        store,
        [app("a", -1, ev("A0"), ev("A1")), app("b", 0, ev("B1")), app("c", -2, ev("C0"), ev("C1"), ev("C2"))],
    )
    res = r["results"]
    assert [(x["stream_id"], x["version"], x["count"]) for x in res] == [("a", 1, 2), ("b", 1, 1), ("c", 2, 3)]
    p = res[0]["position"]
    assert [x["position"] for x in res] == [p, p + 1, p + 2] and r["position"] == p + 2
    assert [x["first_notification_id"] for x in res] == [x["position"] << SHIFT for x in res]
    a, b, c = [await forward(wire, store, s) for s in "abc"]
    assert [(e["event_type"], e["version"], e["position"]) for e in a] == [("A0", 0, p), ("A1", 1, p)]
    assert [(e["event_type"], e["version"]) for e in b] == [("Old", 0), ("B1", 1)]
    assert [(e["version"], e["position"]) for e in c] == [(0, p + 2), (1, p + 2), (2, p + 2)]
    # a single append afterwards continues each stream (the head cache agrees)
    r2 = (await wire.call(store, "append", {"stream_id": "a", "expected_version": 1, "events": [ev()]})).ok()
    assert r2["version"] == 2


async def test_a_conflict_on_the_second_of_three_stores_nothing(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("b", None, ev("Old"))])
    before = await messages(wire, store)
    body = {"appends": [app("a", -1, ev()), app("b", -1, ev()), app("c", -1, ev())]}
    details = await multi_error(wire, store, body, "wrong_expected_version")
    assert details["conflicts"] == [{"stream_id": "b", "expected_version": -1, "actual_version": 0}]
    assert await forward(wire, store, "a") == [] and await forward(wire, store, "c") == []
    assert [e["event_type"] for e in await forward(wire, store, "b")] == ["Old"]
    assert await messages(wire, store) == before


async def test_every_failing_stream_is_named(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("x", None, ev(), ev()), app("y", None, ev())])
    body = {"appends": [app("x", 5, ev()), app("ok", -1, ev()), app("y", -1, ev()), app("z", -4, ev())]}
    details = await multi_error(wire, store, body, "wrong_expected_version")
    assert details["conflicts"] == [
        {"stream_id": "x", "expected_version": 5, "actual_version": 1},
        {"stream_id": "y", "expected_version": -1, "actual_version": 0},
        {"stream_id": "z", "expected_version": -4, "actual_version": -1},
    ]
    assert await forward(wire, store, "ok") == []


async def test_a_stale_expectation_raced_by_a_single_append_is_a_conflict(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("a", -1, ev()), app("b", -1, ev())])
    # another writer moves b on; the service's cached head of b is now stale
    await wire.call(store, "append", {"stream_id": "b", "expected_version": 0, "events": [ev()]})
    details = await multi_error(
        wire, store, {"appends": [app("a", 0, ev()), app("b", 0, ev())]}, "wrong_expected_version"
    )
    assert details["conflicts"] == [{"stream_id": "b", "expected_version": 0, "actual_version": 1}]
    assert len(await forward(wire, store, "a")) == 1


async def test_checkpoint_compare_and_set(wire: Wire, store: str) -> None:
    assert (await wire.call(store, "checkpoint", {"name": "proc"})).ok() == {"name": "proc", "position": None}
    r = await multi(wire, store, [app("a", -1, ev())], checkpoint={"name": "proc", "position": 10})
    assert r["position"] == r["results"][0]["position"] + 1  # the checkpoint is the batch's last message
    assert (await wire.call(store, "checkpoint", {"name": "proc"})).ok()["position"] == 10
    before = await messages(wire, store)
    for pos in (10, 3):
        body = {"appends": [app("b", -1, ev())], "checkpoint": {"name": "proc", "position": pos}}
        details = await multi_error(wire, store, body, "wrong_expected_version")
        assert details == {"checkpoint": {"name": "proc", "position": pos, "stored_position": 10}}
    assert await forward(wire, store, "b") == [] and await messages(wire, store) == before
    # both refusals at once
    body = {"appends": [app("a", -1, ev())], "checkpoint": {"name": "proc", "position": 1}}
    details = await multi_error(wire, store, body, "wrong_expected_version")
    assert set(details) == {"conflicts", "checkpoint"}
    # a checkpoint alone, and checkpoints are per name
    r = await multi(wire, store, [], checkpoint={"name": "proc", "position": 11})
    assert r["results"] == []
    await multi(wire, store, [], checkpoint={"name": "other ünïcode.*>", "position": 0})
    assert (await wire.call(store, "checkpoint", {"name": "proc"})).ok()["position"] == 11
    assert (await wire.call(store, "checkpoint", {"name": "other ünïcode.*>"})).ok()["position"] == 0
    # checkpoints are not events: no read sees them
    page = await read_all(wire, store)
    assert [e["stream_id"] for e in page["events"]] == ["a"]
    assert (await wire.call(store, "list", {})).ok()["streams"] == ["a"]


async def test_racing_checkpoint_writers_store_each_position_once(wire: Wire, store: str) -> None:
    async def attempt(i: int) -> bool:
        body = {"appends": [app(f"s{i}", -1, ev())], "checkpoint": {"name": "race", "position": 1}}
        r = await wire.call(store, "append_multi", body)
        if r.is_error:
            r.error("wrong_expected_version")
            return False
        return True

    wins = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sum(wins) == 1
    streams = (await wire.call(store, "list", {})).ok()["streams"]
    assert streams == [f"s{i}" for i, w in enumerate(wins) if w]


@pytest.mark.parametrize("expected", [-1, -2], ids=["exact", "any"])
async def test_a_resend_with_the_same_event_ids_is_stored_once(wire: Wire, store: str, expected: int) -> None:
    appends = [
        app("a", expected, ev(eid=f"a-{store}")),
        app("b", expected, ev(eid=f"b1-{store}"), ev(eid=f"b2-{store}")),
    ]
    first = await multi(wire, store, appends)
    again = await multi(wire, store, appends)
    assert again == first
    assert [len(await forward(wire, store, s)) for s in "ab"] == [1, 2]
    # with a checkpoint: the whole transaction, checkpoint included, is the resend
    appends2 = [app("c", -1, ev(eid=f"c-{store}"))]
    one = await multi(wire, store, appends2, checkpoint={"name": "p", "position": 7})
    assert await multi(wire, store, appends2, checkpoint={"name": "p", "position": 7}) == one
    # an append already stored on its own answers as stored; the rest is written
    await wire.call(store, "append", {"stream_id": "d", "events": [ev(eid=f"d-{store}")]})
    mixed = await multi(wire, store, [app("d", -2, ev(eid=f"d-{store}")), app("e", -1, ev(eid=f"e-{store}"))])
    assert [(x["stream_id"], x["version"]) for x in mixed["results"]] == [("d", 0), ("e", 0)]
    assert len(await forward(wire, store, "d")) == 1


async def test_a_resend_the_index_misses_is_found_by_its_message_id(wire: Wire, nc: Client, store: str) -> None:
    """The writer died between the log and the index: JetStream refuses the batch (a message id
    it has seen), and the originals are found among the streams' recent commits."""
    appends = [app("a", -2, ev(eid=f"m1-{store}")), app("b", -2, ev(eid=f"m2-{store}"))]
    first = await multi(wire, store, appends)
    s = Subjects()
    purge = {"filter": f"{s.index_root(store)}.id.>"}
    await nc.request(f"$JS.API.STREAM.PURGE.{s.index_stream(store)}", json.dumps(purge).encode())
    assert await multi(wire, store, appends) == first
    assert [len(await forward(wire, store, x)) for x in "ab"] == [1, 1]


@pytest.mark.parametrize("streams", [1, 2])
async def test_ids_of_deleted_streams_make_new_appends(wire: Wire, store: str, streams: int) -> None:
    appends = [app(f"d{i}", -1, ev(eid=f"del{i}-{store}")) for i in range(streams)]
    first = await multi(wire, store, appends)
    for i in range(streams):
        (await wire.call(store, "delete", {"stream_id": f"d{i}"})).ok()
    again = await multi(wire, store, appends)
    assert again["position"] > first["position"]
    assert [len(await forward(wire, store, f"d{i}")) for i in range(streams)] == [1] * streams


async def test_ids_used_again_after_a_refused_batch_are_stored(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("b", None, ev())])
    body = {"appends": [app("a", -1, ev(eid="x1")), app("b", -1, ev(eid="x2"))]}
    await multi_error(wire, store, body, "wrong_expected_version")
    r = await multi(wire, store, [app("a", -1, ev(eid="x1")), app("b", 0, ev(eid="x2"))])
    assert [x["version"] for x in r["results"]] == [0, 1]


async def test_the_event_id_index_knows_the_appends(wire: Wire, store: str) -> None:
    await multi(wire, store, [app("a", -2, ev(eid=f"i1-{store}")), app("b", -1, ev(eid=f"i2-{store}"))])
    r = (await wire.call(store, "reindex", {}, service="store")).ok()
    assert r["scanned"] == 2 and r["checkpoint"] >= 2


async def test_an_existing_store_is_switched_to_atomic_batches(wire: Wire, nc: Client, store: str) -> None:
    cfg = log_stream_config(Subjects(), store, StoreConfig())
    del cfg["allow_atomic"]
    reply = json.loads((await nc.request(f"$JS.API.STREAM.CREATE.{cfg['name']}", json.dumps(cfg).encode())).data)
    assert not reply["config"].get("allow_atomic")
    r = await multi(wire, store, [app("a", -1, ev()), app("b", -1, ev())])
    assert [x["version"] for x in r["results"]] == [0, 0]
    info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{cfg['name']}", b"")).data)
    assert info["config"]["allow_atomic"] is True


async def test_subscriptions_and_the_causation_index_see_each_commit(client: GaterClient, store: str) -> None:
    subject = "deliver." + uuid.uuid4().hex[:12]
    async with client.deliveries(subject) as d:
        await client.save_subscription(store, "stream", "$all", "all", "start", subject)
        await client.append_events(store, "order", [ev("Placed", eid=f"root-{store}")])
        cause = {"causation_id": f"root-{store}"}
        wire = Wire(client.nc)
        await multi(
            wire,
            store,
            [
                app("payment", -1, ev("Paid", eid=f"pay-{store}", meta=cause)),
                app("stock", -1, ev("Reserved", eid=f"res-{store}", meta=cause), ev("Picked")),
            ],
        )
        got: list[Delivery] = []
        deadline = time.monotonic() + 10
        while len(got) < 4:
            x = await d.next(max(0.05, deadline - time.monotonic()))
            await x.ack()
            got.append(x)
        assert [(x.stream_id, x.version) for x in got] == [("order", 0), ("payment", 0), ("stock", 0), ("stock", 1)]
    effects = await client.get_effects(store, f"root-{store}")
    assert sorted(e.event_id for e in effects) == [f"pay-{store}", f"res-{store}"]


async def test_a_link_forwards_each_stream_of_a_transaction(client: GaterClient, store: str) -> None:
    wire = Wire(client.nc)
    await client.create_link(store, {"name": "accts", "source": {"type": "stream_pattern", "pattern": "acct-*"}})
    await client.start_link(store, "accts")
    await multi(
        wire,
        store,
        [
            app("acct-1", -1, ev("Opened"), ev("Credited")),
            app("other", -1, ev("Opened")),
            app("acct-2", -1, ev("Opened")),
        ],
    )
    deadline = time.monotonic() + 10
    got: list[dict[str, Any]] = []
    while len(got) < 3 and time.monotonic() < deadline:
        got = await forward(wire, store, "$link:accts")
        await asyncio.sleep(0.1)
    keys = [(e["metadata"]["source_stream"], e["metadata"]["source_version"]) for e in got]
    assert keys == [("acct-1", 0), ("acct-1", 1), ("acct-2", 0)]


# --- read_all ---------------------------------------------------------------------------------------


async def _seed(wire: Wire, store: str) -> list[dict[str, Any]]:
    """Single appends, transactions and checkpoints interleaved; returns every event in log order."""
    await wire.call(store, "append", {"stream_id": "orders-1", "events": [ev("Placed"), ev("Paid")]})
    await multi(wire, store, [app("users-1", -1, ev("Joined")), app("orders-2", -1, ev("Placed"))])
    await multi(wire, store, [app("orders-1", 1, ev("Shipped"))], checkpoint={"name": "p", "position": 1})
    await wire.call(store, "append", {"stream_id": "users-2", "events": [ev("Joined"), ev("Left"), ev("Joined")]})
    await multi(wire, store, [], checkpoint={"name": "p", "position": 2})
    page = await read_all(wire, store, limit=1000)
    assert page["next"] is None
    return page["events"]  # type: ignore[no-any-return]


def _ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["notification_id"] for e in events]


async def test_notification_ids(wire: Wire, store: str) -> None:
    events = await _seed(wire, store)
    assert [(e["stream_id"], e["event_type"]) for e in events] == [
        ("orders-1", "Placed"),
        ("orders-1", "Paid"),
        ("users-1", "Joined"),
        ("orders-2", "Placed"),
        ("orders-1", "Shipped"),
        ("users-2", "Joined"),
        ("users-2", "Left"),
        ("users-2", "Joined"),
    ]
    ids = _ids(events)
    assert ids == sorted(set(ids))
    for e in events:
        assert e["notification_id"] >> SHIFT == e["position"]
    by_position: dict[int, list[int]] = {}
    for e in events:
        by_position.setdefault(e["position"], []).append(e["notification_id"])
    for pos, group in by_position.items():  # an append's events: consecutive ids from position << 14
        assert group == list(range(pos << SHIFT, (pos << SHIFT) + len(group)))
    page = await read_all(wire, store, limit=1)
    assert page["last_notification_id"] == ids[-1]  # the trailing checkpoint is no event
    # versions and the rest as a stream read gives them
    stream = await forward(wire, store, "users-2")
    assert [{k: v for k, v in e.items() if k != "notification_id"} for e in events[-3:]] == stream


async def test_paging_forward_and_backward(wire: Wire, store: str) -> None:
    events = await _seed(wire, store)
    ids = _ids(events)
    for limit in (1, 2, 3, 8, 100):
        got: list[int] = []
        page = await read_all(wire, store, limit=limit)
        while True:
            got += _ids(page["events"])
            assert len(page["events"]) <= limit
            if page["next"] is None:
                break
            page = await read_all(wire, store, limit=limit, inclusive=False, **{"from": page["next"]})
        assert got == ids, limit
        back: list[int] = []
        page = await read_all(wire, store, limit=limit, direction="backward")
        while True:
            back += _ids(page["events"])
            if page["next"] is None:
                break
            page = await read_all(
                wire, store, limit=limit, direction="backward", inclusive=False, **{"from": page["next"]}
            )
        assert back == ids[::-1], limit


async def test_from_inclusive_and_to(wire: Wire, store: str) -> None:
    ids = _ids(await _seed(wire, store))
    mid = ids[3]
    assert _ids((await read_all(wire, store, **{"from": mid}))["events"]) == ids[3:]
    assert _ids((await read_all(wire, store, inclusive=False, **{"from": mid}))["events"]) == ids[4:]
    assert _ids((await read_all(wire, store, to=ids[5], **{"from": ids[1]}))["events"]) == ids[1:6]
    assert _ids((await read_all(wire, store, direction="backward", **{"from": mid}))["events"]) == ids[3::-1]
    back_excl = await read_all(wire, store, direction="backward", inclusive=False, **{"from": mid})
    assert _ids(back_excl["events"]) == ids[2::-1]
    back_to = await read_all(wire, store, direction="backward", to=ids[2], **{"from": ids[6]})
    assert _ids(back_to["events"]) == ids[6:1:-1]
    # ids need not exist: between two, past the end, zero
    assert _ids((await read_all(wire, store, **{"from": ids[1] + 1}))["events"]) == ids[2:]
    assert (await read_all(wire, store, **{"from": ids[-1] + 1})) == {
        "events": [],
        "next": None,
        "last_notification_id": ids[-1],
    }
    assert _ids((await read_all(wire, store, **{"from": 0}))["events"]) == ids
    assert _ids((await read_all(wire, store, direction="backward", **{"from": 10**15}))["events"]) == ids[::-1]
    # one transaction's events, exactly: position << 14 .. (position + 1) << 14 - 1
    p = ids[5] >> SHIFT
    one = await read_all(wire, store, to=((p + 1) << SHIFT) - 1, **{"from": p << SHIFT})
    assert _ids(one["events"]) == ids[5:8]


async def test_filters(wire: Wire, store: str) -> None:
    events = await _seed(wire, store)
    joined = [e["notification_id"] for e in events if e["event_type"] == "Joined"]
    assert _ids((await read_all(wire, store, event_types=["Joined"]))["events"]) == joined
    orders = [e["notification_id"] for e in events if e["stream_id"].startswith("orders-")]
    assert _ids((await read_all(wire, store, stream_prefix="orders-"))["events"]) == orders
    both = [e["notification_id"] for e in events if e["stream_id"].startswith("users") and e["event_type"] == "Left"]
    page = await read_all(wire, store, stream_prefix="users", event_types=["Left", "Nope"], direction="backward")
    assert _ids(page["events"]) == both
    # limit counts events after the filters; pages continue with next
    got: list[int] = []
    page = await read_all(wire, store, event_types=["Joined", "Placed"], limit=2)
    while True:
        got += _ids(page["events"])
        if page["next"] is None:
            break
        page = await read_all(
            wire, store, event_types=["Joined", "Placed"], limit=2, inclusive=False, **{"from": page["next"]}
        )
    assert got == [e["notification_id"] for e in events if e["event_type"] in ("Joined", "Placed")]


async def test_read_all_of_an_empty_and_a_missing_store(wire: Wire, store: str) -> None:
    empty: dict[str, Any] = {"events": [], "next": None, "last_notification_id": None}
    assert await read_all(wire, store) == empty  # missing (stores made on first use: as empty)
    (await wire.call(store, "create", {}, service="store")).ok()
    assert await read_all(wire, store) == empty
    await multi(wire, store, [], checkpoint={"name": "p", "position": 1})  # a checkpoint only
    assert await read_all(wire, store, direction="backward") == empty
    assert (await wire.call(store, "info", {}, service="store")).ok()["streams"] == 1  # the checkpoint's subject


async def test_read_all_upcasts_unless_raw(client: GaterClient, store: str) -> None:
    wire = Wire(client.nc)
    await wire.call(store, "append", {"stream_id": "s", "events": [ev("Renamed", {"n": "a"})]})
    page = await read_all(wire, store, raw=True)
    assert page["events"][0]["data"] == {"n": "a"}


async def test_a_long_log_pages_without_rescanning(wire: Wire, store: str) -> None:
    for i in range(30):
        await multi(wire, store, [app(f"s{j}", None, *[ev(f"T{j}")] * (1 + (i + j) % 3)) for j in range(10)])
    n = len((await read_all(wire, store, limit=10000))["events"])
    pages = 0
    page = await read_all(wire, store, limit=250)
    seen = list(_ids(page["events"]))
    while page["next"] is not None:
        pages += 1
        page = await read_all(wire, store, limit=250, inclusive=False, **{"from": page["next"]})
        seen += _ids(page["events"])
    assert len(seen) == n and seen == sorted(seen) and pages <= n // 250 + 1


# --- hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"appends": []},
        {},
        {"appends": [app("a", -1, ev()), app("a", -1, ev())]},
        {"appends": [app(f"s{i}", -1, ev()) for i in range(101)]},
        {"appends": [app("a", -1, *[ev()] * 600), app("b", -1, *[ev()] * 600)]},
        {"appends": [app("a", -1)]},
        {"appends": [app("$link:x", -1, ev())]},
        {"appends": [app("a", -3, ev())]},
        {"appends": [app("a", -1, ev(eid="same")), app("b", -1, ev(eid="same"))]},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "", "position": 1}},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "x" * 257, "position": 1}},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "p", "position": -1}},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "p", "position": 2**63}},  # msgpack overflow
        {"checkpoint": {"name": "p", "position": 2**70}},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "p", "position": "1"}},
        {"appends": [app("a", -1, ev())], "checkpoint": {"name": "p"}},
        {"appends": {"stream_id": "a"}},
        {"appends": [app("a", -1, ev())], "extra": 1},
    ],
)
async def test_append_multi_refuses_hostile_input(wire: Wire, store: str, body: dict[str, Any]) -> None:
    await multi_error(wire, store, body, "invalid_request")
    assert (await wire.call(store, "list", {})).ok()["streams"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": 10001},
        {"from": -1},
        {"from": "5"},
        {"to": -3},
        {"direction": "sideways"},
        {"event_types": []},
        {"event_types": [f"t{i}" for i in range(101)]},
        {"event_types": [""]},
        {"stream_prefix": ""},
        {"inclusive": "no"},
        {"cursor": 5},
    ],
)
async def test_read_all_refuses_hostile_input(wire: Wire, store: str, body: dict[str, Any]) -> None:
    (await wire.call(store, "read_all", body)).error("invalid_request")


async def test_the_client_refuses_a_store_name_that_is_not_one_subject_token(client: GaterClient) -> None:
    from esdb_gater.shared.core.errors import InvalidRequestError

    for bad in ("a.b", ">", "*", "", "x" * 65):
        with pytest.raises(InvalidRequestError):
            await client.get_version(bad, "s")


async def test_checkpoint_refuses_hostile_input(wire: Wire, store: str) -> None:
    for body in ({}, {"name": ""}, {"name": 5}, {"name": "x" * 300}):
        (await wire.call(store, "checkpoint", body)).error("invalid_request")


async def test_the_python_client_appends_reads_all_and_checkpoints(
    client: GaterClient, msgpack_client: GaterClient, store: str
) -> None:
    from esdb_gater.shared.core.errors import WrongExpectedVersionError

    binary = {"event_type": "Blob", "data": b"\x00\xff", "data_content_type": "application/octet-stream"}
    last = None
    for n, c in enumerate((client, msgpack_client)):
        reply = await c.append_multi(
            store,
            [
                {"stream_id": f"c-a{n}", "expected_version": -1, "events": [ev("A1"), ev("A2")]},
                {"stream_id": f"c-b{n}", "expected_version": -1, "events": [binary]},
            ],
            checkpoint=(f"upstream{n}", 7),
        )
        assert [(r.stream_id, r.version) for r in reply.results] == [(f"c-a{n}", 1), (f"c-b{n}", 0)]
        assert await c.checkpoint(store, f"upstream{n}") == 7
        assert await c.checkpoint(store, "nobody") is None

        page = await c.read_all(store, from_id=last, inclusive=False, limit=2)
        assert [e.event_type for e in page.events] == ["A1", "A2"]
        assert page.events[1].notification_id == page.events[0].notification_id + 1
        rest = await c.read_all(store, from_id=page.next, inclusive=False)
        assert [(e.event_type, e.data) for e in rest.events] == [("Blob", b"\x00\xff")]
        assert rest.last_notification_id == rest.events[-1].notification_id
        last = rest.last_notification_id

        with pytest.raises(WrongExpectedVersionError) as err:
            await c.append_multi(store, [{"stream_id": f"c-a{n}", "expected_version": 0, "events": [ev("late")]}])
        assert err.value.details["conflicts"][0]["stream_id"] == f"c-a{n}"
        assert await c.get_version(store, f"c-a{n}") == 1
