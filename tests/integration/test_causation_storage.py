"""Causation answers and index size over the wire (docs/adr/0025-storage-per-event.md): events with
and without causation/correlation ids, the index messages each gets, and a store whose index was
written by the previous version (maps, event ids in the subjects) answering the same."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import NoCauseError, NotFoundError
from esdb_gater.shared.core.subjects import Subjects
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)

S = Subjects()


def ev(eid: str, cause: str | None = None, corr: str | None = None, **data: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if cause is not None:
        meta["causation_id"] = cause
    if corr is not None:
        meta["correlation_id"] = corr
    return {"event_id": eid, "event_type": "T", "data": data, "metadata": meta}


async def seed(c: GaterClient, store: str) -> dict[str, str]:
    """p (no ids at all) → q → r; s (no ids) caused nothing; t has a correlation id only; u is
    caused by p without a correlation id; r and u share an append."""
    ids = {x: f"{x}-{store}" for x in "pqrstu"}
    await c.append_events(store, "a", [ev(ids["p"])])
    await c.append_events(store, "b", [ev(ids["q"], ids["p"], "k")])
    await c.append_events(store, "c", [ev(ids["r"], ids["q"], "k"), ev(ids["u"], ids["p"])])
    await c.append_events(store, "a", [ev(ids["s"])])
    await c.append_events(store, "d", [ev(ids["t"], None, "k")])
    return ids


def idlist(events: list[Any]) -> list[str]:
    return [e.event_id if hasattr(e, "event_id") else e["event_id"] for e in events]


async def check_answers(client: GaterClient, wire: Wire, store: str, ids: dict[str, str]) -> None:
    p, q, r, s, t, u = (ids[x] for x in "pqrstu")
    assert idlist(await client.get_effects(store, p)) == [q, u]
    assert idlist(await client.get_effects(store, q)) == [r]
    assert idlist(await client.get_effects(store, s)) == []
    with pytest.raises(NoCauseError):
        await client.get_cause(store, p)  # an event with no ids is found: it has no cause
    with pytest.raises(NoCauseError):
        await client.get_cause(store, t)
    assert (await client.get_cause(store, q)).event_id == p
    assert (await client.get_cause(store, u)).event_id == p
    with pytest.raises(NotFoundError):
        await client.get_cause(store, "unknown")
    assert idlist(await client.get_causation_chain(store, r)) == [p, q, r]
    assert idlist(await client.get_causation_chain(store, s)) == [s]
    assert idlist(await client.get_causation_chain(store, u)) == [p, u]
    assert idlist(await client.get_correlated(store, "k")) == [q, r, t]
    g = (await wire.call(store, "graph", {"event_id": r}, service="causation")).ok()
    assert idlist(g["nodes"]) == [p, q, r, u]
    assert (g["roots"], g["leaves"]) == ([p], [r, u])
    g = (await wire.call(store, "graph", {"id": s}, service="causation")).ok()  # an event, not a correlation
    assert (idlist(g["nodes"]), g["edges"]) == ([s], [])
    g = (await wire.call(store, "graph", {"id": "k"}, service="causation")).ok()
    assert idlist(g["nodes"]) == [q, r, t]


async def index_subjects(nc: Client, store: str) -> dict[str, int]:
    body = {"subjects_filter": f"{S.index_root(store)}.>"}
    msg = await nc.request(f"$JS.API.STREAM.INFO.{S.index_stream(store)}", json.dumps(body).encode(), timeout=5)
    subjects: dict[str, int] = json.loads(msg.data)["state"].get("subjects") or {}
    return subjects


async def test_events_with_and_without_ids(client: GaterClient, wire: Wire, nc: Client, store: str) -> None:
    ids = await seed(client, store)
    await check_answers(client, wire, store, ids)
    subjects = await index_subjects(nc, store)
    kinds: dict[str, int] = {}
    for subject in subjects:
        kind = subject.split(".")[3]
        kinds[kind] = kinds.get(kind, 0) + 1
    # one id entry per event; one record per (causation id, append): p in q's and in r+u's, q in
    # r+u's; and per (correlation id, append): q's, r+u's, t's
    assert (kinds.get("id"), kinds.get("cause"), kinds.get("corr")) == (6, 3, 3)
    assert set(subjects.values()) == {1}
    prefix = S.index_cause(store, ids["p"])[:-1]  # p's effects: the appends' positions after the id
    assert [s[len(prefix) :].isdigit() for s in subjects if s.startswith(prefix)] == [True, True]


async def test_an_index_of_the_previous_version_is_read(
    client: GaterClient, wire: Wire, nc: Client, store: str
) -> None:
    """The index is replaced by what the previous version wrote for the same log: msgpack maps
    ``{"s", "q", "v"}`` (``{"s", "q"}`` from the stream service), cause/corr subjects ending in the
    event id. Every answer stays the same."""
    ids = await seed(client, store)
    await check_answers(client, wire, store, ids)  # the index has caught up
    js = nc.jetstream()
    await js.purge_stream(S.index_stream(store))
    info = await js.stream_info(S.log_stream(store))
    for seq in range(1, int(info.state.last_seq) + 1):
        sm = await js.get_msg(S.log_stream(store), seq, direct=True)
        assert sm.subject is not None and sm.data is not None
        sid = S.stream_id_of(sm.subject)
        first = int((sm.headers or {})["Esdb-Version"])
        for i, row in enumerate(msgpack.unpackb(sm.data, raw=False)):
            value = {"s": sid, "q": seq, "v": first + i}
            await js.publish(S.index_event_id(store, row["i"]), msgpack.packb(value))
            meta = row.get("m") or {}
            if "causation_id" in meta:
                await js.publish(S.index_cause(store, meta["causation_id"], row["i"]), msgpack.packb(value))
            if "correlation_id" in meta:
                await js.publish(S.index_corr(store, meta["correlation_id"], row["i"]), msgpack.packb(value))
        if seq == 1:  # the stream service's own entry for an idempotent append, no version
            await js.publish(S.index_event_id(store, ids["p"]), msgpack.packb({"s": sid, "q": seq}))
    assert not any(re.search(r"\.(cause|corr)\.[^.]+\.[0-9]+$", s) for s in await index_subjects(nc, store))
    await check_answers(client, wire, store, ids)
