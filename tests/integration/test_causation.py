"""Causation queries over the wire (SPEC.md §7, issue 7): a graph across several streams, its
chain, effects, roots and leaves, correlated events by time, DOT text, and the errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import NoCauseError, NotFoundError, StreamNotFoundError
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)

K = "checkout-42"


def ev(eid: str, etype: str, cause: str | None = None, corr: str | None = K) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if cause is not None:
        meta["causation_id"] = cause
    if corr is not None:
        meta["correlation_id"] = corr
    return {"event_id": eid, "event_type": etype, "data": {"id": eid}, "metadata": meta}


async def seed(c: GaterClient, store: str) -> dict[str, str]:
    """a → b → d → e, a → c → f across five streams; h's cause is not in the store; g has another
    correlation id. Returns the ids by letter."""
    ids = {x: f"{x}-{store}" for x in "abcdefgh"}
    await c.append_events(store, "order-1", [ev(ids["a"], "OrderPlaced")])
    await c.append_events(store, "payment-1", [ev(ids["b"], "PaymentRequested", ids["a"])])
    await c.append_events(store, "inventory-1", [ev(ids["c"], "StockReserved", ids["a"])])
    await c.append_events(store, "payment-1", [ev(ids["d"], "PaymentCaptured", ids["b"])])
    await c.append_events(
        store, "shipping-1", [ev(ids["e"], "Shipped", ids["d"]), ev(ids["f"], "PickListPrinted", ids["c"])]
    )
    await c.append_events(store, "other", [ev(ids["g"], "Unrelated", None, "another")])
    await c.append_events(store, "audit", [ev(ids["h"], "Audited", "not-in-this-store")])
    return ids


def idlist(events: list[Any]) -> list[str]:
    return [e.event_id if hasattr(e, "event_id") else e["event_id"] for e in events]


async def test_effects_cause_chain_and_correlated(client: GaterClient, store: str) -> None:
    ids = await seed(client, store)
    a, b, c, d, e, f, h = (ids[x] for x in "abcdefh")
    assert idlist(await client.get_effects(store, a)) == [b, c]  # by time
    assert idlist(await client.get_effects(store, e)) == []
    assert idlist(await client.get_effects(store, "unknown")) == []

    cause = await client.get_cause(store, d)
    assert (cause.event_id, cause.stream_id, cause.version, cause.event_type) == (b, "payment-1", 0, "PaymentRequested")
    with pytest.raises(NoCauseError):
        await client.get_cause(store, a)
    with pytest.raises(NotFoundError) as exc:
        await client.get_cause(store, h)  # its cause is not in the store
    assert exc.value.details["causation_id"] == "not-in-this-store"
    with pytest.raises(NotFoundError):
        await client.get_cause(store, "unknown")

    assert idlist(await client.get_causation_chain(store, e)) == [a, b, d, e]
    assert idlist(await client.get_causation_chain(store, f)) == [a, c, f]
    assert idlist(await client.get_causation_chain(store, a)) == [a]
    assert idlist(await client.get_causation_chain(store, h)) == [h]  # stops at the missing cause
    with pytest.raises(NotFoundError):
        await client.get_causation_chain(store, "unknown")

    correlated = await client.get_correlated(store, K)
    assert idlist(correlated) == [a, b, c, d, e, f, h]
    assert [x.epoch_us for x in correlated] == sorted(x.epoch_us for x in correlated)
    assert idlist(await client.get_correlated(store, "another")) == [ids["g"]]
    assert await client.get_correlated(store, "none") == []


async def test_graph_by_event_by_correlation_and_dot(client: GaterClient, wire: Wire, store: str) -> None:
    ids = await seed(client, store)
    a, b, c, d, e, f, h = (ids[x] for x in "abcdefh")
    edges = [
        {"from": a, "to": b},
        {"from": a, "to": c},
        {"from": b, "to": d},
        {"from": d, "to": e},
        {"from": c, "to": f},
    ]

    g = (await wire.call(store, "graph", {"event_id": d, "format": "dot"}, service="causation")).ok()
    assert idlist(g["nodes"]) == [a, b, c, d, e, f]  # d's root, and everything the root caused
    assert g["edges"] == edges
    assert (g["roots"], g["leaves"], g["truncated"]) == ([a], [e, f], False)
    dot = g["dot"]
    assert dot.startswith("digraph causation {") and dot.rstrip().endswith("}")
    assert f'"{a}" -> "{b}";' in dot and f'"{c}" -> "{f}";' in dot
    assert f'"{d}" [label="PaymentCaptured\\n' in dot

    g = (await wire.call(store, "graph", {"correlation_id": K}, service="causation")).ok()
    assert idlist(g["nodes"]) == [a, b, c, d, e, f, h]
    assert g["edges"] == edges
    assert (g["roots"], g["leaves"]) == ([a, h], [e, f, h])
    assert "dot" not in g

    by_id = await client.build_causation_graph(store, K)  # the seed's form: an event id or a correlation id
    assert by_id.roots == [a, h]
    by_id = await client.build_causation_graph(store, e, format="dot")
    assert (by_id.roots, by_id.leaves) == ([a], [e, f])
    assert by_id.dot and by_id.dot.startswith("digraph")
    assert [(x.from_, x.to) for x in by_id.edges] == [(x["from"], x["to"]) for x in edges]

    small = (await wire.call(store, "graph", {"event_id": a, "max_nodes": 3}, service="causation")).ok()
    assert small["truncated"] is True and len(small["nodes"]) == 3

    for body in ({}, {"event_id": a, "correlation_id": K}, {"event_id": a, "format": "svg"}):
        details = (await wire.call(store, "graph", body, service="causation")).error("invalid_request")
        assert details["field"]
    (await wire.call(store, "graph", {"event_id": "unknown"}, service="causation")).error("not_found")
    (await wire.call(store, "graph", {"correlation_id": "unknown"}, service="causation")).error("not_found")
    (await wire.call(store, "graph", {"id": "unknown"}, service="causation")).error("not_found")
    (await wire.call(store, "effects", {"event_id": ""}, service="causation")).error("invalid_request")
    (await wire.call(store, "chain", {"event_id": a, "max_depth": 0}, service="causation")).error("invalid_request")


async def test_a_query_sees_the_events_written_before_it(client: GaterClient, store: str) -> None:
    """The indexes are written as events are: a query right after an append already sees it."""
    await client.append_events(store, "s", [ev(f"root-{store}", "Root")])
    for i in range(20):
        await client.append_events(store, "s", [ev(f"e{i}-{store}", "Effect", f"root-{store}")])
        effects = await client.get_effects(store, f"root-{store}")
        assert len(effects) == i + 1
    chain = await client.get_causation_chain(store, f"e19-{store}")
    assert idlist(chain) == [f"root-{store}", f"e19-{store}"]


async def test_link_copies_are_not_new_effects(client: GaterClient, store: str) -> None:
    """A link copies source metadata into $link:<name>; those copies are found by id but never
    counted as effects or correlated events."""
    ids = await seed(client, store)
    await client.create_link(store, {"name": "mirror", "source": {"type": "all"}})
    await client.start_link(store, "mirror")
    deadline = time.monotonic() + 15
    copies: list[Any] = []
    while time.monotonic() < deadline and len(copies) < 8:
        try:
            copies = await client.stream_forward(store, "$link:mirror", 0, 100)
        except StreamNotFoundError:
            copies = []
        await asyncio.sleep(0.05)
    assert len(copies) == 8
    assert idlist(await client.get_effects(store, ids["a"])) == [ids["b"], ids["c"]]
    assert len(await client.get_correlated(store, K)) == 7
    chain = await client.get_causation_chain(store, copies[3].event_id)  # a copy of d: its cause is b
    assert idlist(chain) == [ids["a"], ids["b"], copies[3].event_id]
    await client.delete_link(store, "mirror")


async def test_missing_store(wire: Wire, store: str) -> None:
    (await wire.call(store, "effects", {"event_id": "x"}, service="causation")).error("store_not_found")
