"""Many writers on one stream across two service instances (SPEC.md §3: appends to one stream are
linearizable, no two events share a version, no gaps; instances share the load via the queue group)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import WrongExpectedVersionError
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.runtime.runner import Running


@pytest.fixture(scope="module")
async def second_instance(nats_url: str, services: Running) -> AsyncIterator[Running]:
    """A second stream-service instance on its own connection, next to the session's one."""
    settings = Settings(nats_url=nats_url, auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0))
    running = await start_services(["stream"], settings)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def instance_ids(services: Running, second_instance: Running) -> list[str]:
    ids = [services.services[0].service.id, second_instance.services[0].service.id]
    assert ids[0] != ids[1]
    return ids


async def _stats(nc: Client, instance_id: str) -> dict[str, dict[str, Any]]:
    msg = await nc.request(f"$SRV.STATS.esdb-stream.{instance_id}", b"", timeout=2)
    body = json.loads(msg.data)
    assert body["id"] == instance_id
    return {ep["name"]: ep for ep in body["endpoints"]}


async def _requests(nc: Client, ids: list[str], endpoint: str) -> list[int]:
    return [(await _stats(nc, i))[endpoint]["num_requests"] for i in ids]


async def test_optimistic_writers_on_one_stream_across_two_instances(
    client: GaterClient, nc: Client, store: str, stream_id: str, instance_ids: list[str]
) -> None:
    writers, per_writer = 16, 25
    before = await _requests(nc, instance_ids, "append")

    async def writer(w: int) -> tuple[list[tuple[str, int]], int]:
        acked: list[tuple[str, int]] = []
        attempts = 0
        seen = await client.get_version(store, stream_id)
        while len(acked) < per_writer:
            event_id = f"w{w:02d}-{len(acked):02d}"
            event = {"event_id": event_id, "event_type": "Wrote", "data": {"w": w, "k": len(acked)}}
            attempts += 1
            try:
                r = await client.append_events(store, stream_id, seen, [event])
            except WrongExpectedVersionError:
                seen = await client.get_version(store, stream_id)
                continue
            assert r.count == 1
            acked.append((event_id, r.version))
            seen = r.version
        return acked, attempts

    results = await asyncio.gather(*(writer(w) for w in range(writers)))
    acked = [a for r, _ in results for a in r]
    attempts = sum(n for _, n in results)
    total = writers * per_writer

    events = await client.stream_forward(store, stream_id, 0, total + 10)
    assert [e.version for e in events] == list(range(total)), "versions must be contiguous from 0"
    assert len(acked) == len(events) == total
    ids = [e.event_id for e in events]
    assert len(set(ids)) == total, "an event was stored twice"
    assert {e.event_id: e.version for e in events} == dict(acked), "acknowledged version differs from stored"
    # each writer's own events are in its order
    for w in range(writers):
        mine = [e.data["k"] for e in events if e.data["w"] == w]
        assert mine == list(range(per_writer))
    assert await client.get_version(store, stream_id) == total - 1

    after = await _requests(nc, instance_ids, "append")
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(deltas) == attempts
    assert all(d > 0 for d in deltas), f"both instances must have answered appends: {deltas}"


async def test_concurrent_any_appends_get_distinct_versions(
    client: GaterClient, nc: Client, store: str, instance_ids: list[str]
) -> None:
    """200 concurrent ANY appends to one stream, answered by both instances, all succeed with
    versions 0..199. Three rounds (three streams), since a lost race shows only sometimes."""
    n, rounds = 200, 3
    before = await _requests(nc, instance_ids, "append")

    for r in range(rounds):
        stream_id = f"any-{r}"

        async def one(i: int, stream_id: str = stream_id) -> tuple[str, int]:
            event = {"event_id": f"{stream_id}-{i}", "event_type": "Any", "data": {"i": i}}
            reply = await client.append_events(store, stream_id, -2, [event])
            return f"{stream_id}-{i}", reply.version

        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        failed = [repr(x) for x in results if isinstance(x, BaseException)]
        assert not failed, f"round {r}: {len(failed)} of {n} ANY appends failed, e.g. {failed[0]}"
        acked = [x for x in results if not isinstance(x, BaseException)]
        assert sorted(v for _, v in acked) == list(range(n))
        events = await client.stream_forward(store, stream_id, 0, n + 10)
        assert [e.version for e in events] == list(range(n))
        assert {e.event_id: e.version for e in events} == dict(acked)

    after = await _requests(nc, instance_ids, "append")
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(deltas) == n * rounds
    assert all(d > 0 for d in deltas), f"both instances must have answered appends: {deltas}"


async def test_concurrent_multi_event_appends_never_interleave(
    client: GaterClient, store: str, stream_id: str, second_instance: Running
) -> None:
    """Atomic appends of 5 events each: every append's events are contiguous in the stream."""
    appends = 40

    async def one(i: int) -> int:
        events = [{"event_type": "Part", "data": {"a": i, "p": p}} for p in range(5)]
        return (await client.append_events(store, stream_id, events)).version

    lasts = await asyncio.gather(*(one(i) for i in range(appends)))
    assert sorted(lasts) == [5 * k + 4 for k in range(appends)]
    events = await client.stream_forward(store, stream_id, 0, 5 * appends)
    for k in range(appends):
        chunk = events[5 * k : 5 * k + 5]
        assert len({e.data["a"] for e in chunk}) == 1
        assert [e.data["p"] for e in chunk] == list(range(5))
        assert len({e.position for e in chunk}) == 1


async def test_appends_to_many_streams_proceed_concurrently(
    client: GaterClient, store: str, second_instance: Running
) -> None:
    streams, per_stream = 40, 8

    async def stream_writer(s: int) -> None:
        for k in range(per_stream):
            await client.append_events(store, f"s{s:02d}", k - 1, [{"event_type": "E", "data": {"k": k}}])

    await asyncio.gather(*(stream_writer(s) for s in range(streams)))
    ids = await client.get_streams(store)
    assert ids == [f"s{s:02d}" for s in range(streams)]
    versions = await asyncio.gather(*(client.get_version(store, sid) for sid in ids))
    assert versions == [per_stream - 1] * streams
