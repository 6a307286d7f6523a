"""Stream links over the wire, against a real nats-server (SPEC.md §8, issue 7).

This module runs its own server and service instances (lease TTL 1 s) so it can stop, kill and
restart link instances and the server without disturbing the session's services.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, StreamNotFoundError
from esdb_gater.shared.core.settings import MemorySettings, Settings
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.models.stream import RecordedEvent
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def link_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def _settings(url: str, **kw: Any) -> Settings:
    return Settings(nats_url=url, auto_create_stores=True, lease_ttl_s=1.0, **kw)


@pytest.fixture(scope="module")
async def link_services(link_server: NatsServer) -> AsyncIterator[Running]:
    running = await start_services(["stream", "link", "schema"], _settings(link_server.url))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def c(link_services: Running, link_server: NatsServer) -> AsyncIterator[GaterClient]:
    nc = await jetstream.connect(link_server.url)
    try:
        yield GaterClient(nc, timeout=10)
    finally:
        await nc.drain()


@pytest.fixture
def st() -> str:
    return "l" + uuid.uuid4().hex[:10]


def ev(t: str, data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"event_type": t, "data": data if data is not None else {}, **extra}


async def derived(c: GaterClient, st: str, name: str) -> list[RecordedEvent]:
    try:
        return await c.stream_forward(st, f"$link:{name}", 0, 10_000)
    except StreamNotFoundError:
        return []


async def eventually(probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        value = await probe()
        if check(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within}s; last value {value!r}")


async def until_count(c: GaterClient, st: str, name: str, n: int, within: float = 15.0) -> list[RecordedEvent]:
    got: list[RecordedEvent] = await eventually(lambda: derived(c, st, name), lambda v: len(v) >= n, within)
    return got


def source_keys(events: list[RecordedEvent]) -> list[tuple[str, int]]:
    return [(e.metadata["source_stream"], e.metadata["source_version"]) for e in events]


def assert_exactly_once(got: list[RecordedEvent], expected: list[tuple[str, int]]) -> None:
    """Each expected source event once (no duplicate, no gap), in version order per source stream,
    derived versions 0..n-1."""
    keys = source_keys(got)
    dup = [k for k, n in Counter(keys).items() if n > 1]
    assert not dup, f"duplicates: {dup[:5]}"
    assert sorted(keys) == sorted(expected), (
        f"missing {sorted(set(expected) - set(keys))[:5]}, extra {sorted(set(keys) - set(expected))[:5]}"
    )
    assert [e.version for e in got] == list(range(len(got)))
    assert len({e.event_id for e in got}) == len(got)
    for stream in {s for s, _ in expected}:
        versions = [v for s, v in keys if s == stream]
        assert versions == sorted(versions), stream


# --- forwarding -----------------------------------------------------------------------------------


async def test_backfill_then_live_with_filter_transform_and_source_metadata(c: GaterClient, st: str) -> None:
    src = [await c.append_events(st, f"orders-{i % 3}", [ev("Placed", {"amount": i * 50, "n": i})]) for i in range(6)]
    await c.append_events(st, "users-1", [ev("Placed", {"amount": 999})])  # not matched by the pattern
    info = await c.create_link(
        st,
        {
            "name": "big",
            "source": {"type": "stream_pattern", "pattern": "orders-*"},
            "filter": {
                "type": "and",
                "filters": [
                    {"field": "data.amount", "op": ">=", "value": 100},
                    {"field": "event_type", "op": "=", "value": "Placed"},
                ],
            },
            "transform": {"rename_fields": {"n": "number"}, "add_fields": {"flag": True}},
        },
    )
    assert (info.status, info.stream_id, info.events_processed, info.backfill) == ("stopped", "$link:big", 0, True)
    # creating does not start it. The marker: a link started later, whose copy shows the
    # supervisor has since looked at every definition (a running "big" would have taken its
    # lease in that same look)
    await c.create_link(st, {"name": "marker", "source": {"type": "stream", "stream_id": "users-1"}})
    await c.start_link(st, "marker")
    await until_count(c, st, "marker", 1)
    assert not (await c.link_info(st, "big")).active
    assert await derived(c, st, "big") == []

    await c.start_link(st, "big")
    got = await until_count(c, st, "big", 4)
    assert source_keys(got) == [("orders-2", 0), ("orders-0", 1), ("orders-1", 1), ("orders-2", 1)]
    first = got[0]
    assert first.event_type == "Placed"
    assert first.data == {"amount": 100, "number": 2, "flag": True}
    assert first.metadata["source_position"] == src[2].position
    # live
    await c.append_events(st, "orders-9", [ev("Placed", {"amount": 500, "n": 9}), ev("Placed", {"amount": 1})])
    got = await until_count(c, st, "big", 5)
    assert source_keys(got)[-1] == ("orders-9", 0)
    info = await eventually(lambda: c.link_info(st, "big"), lambda i: i.events_processed == 5 and i.lag == 0)
    assert (info.status, info.active, info.events_filtered) == ("running", True, 3)
    assert info.last_event is not None and info.last_event["stream_id"] == "orders-9"
    assert info.last_event["link_version"] == 4 and info.created_at > 0


async def test_all_source_skips_link_streams_and_stream_source_reads_one_stream(c: GaterClient, st: str) -> None:
    await c.append_events(st, "a", [ev("A")])
    await c.append_events(st, "b", [ev("B"), ev("B")])
    await c.create_link(st, {"name": "everything", "source": {"type": "all"}})
    await c.create_link(st, {"name": "only-b", "source": {"type": "stream", "stream_id": "b"}})
    await c.start_link(st, "everything")
    await c.start_link(st, "only-b")
    await until_count(c, st, "only-b", 2)
    everything = await until_count(c, st, "everything", 3)
    # $link:only-b grew meanwhile: "all" must not pick it up. "c" is appended after the copies
    # in $link:only-b, and a link forwards in log order: once its copy is there, so is any copy
    # of theirs
    await c.append_events(st, "c", [ev("C")])
    everything = await eventually(lambda: derived(c, st, "everything"), lambda got: ("c", 0) in source_keys(got))
    assert source_keys(everything) == [("a", 0), ("b", 0), ("b", 1), ("c", 0)]
    assert source_keys(await derived(c, st, "only-b")) == [("b", 0), ("b", 1)]
    # a link can read another link's stream
    await c.create_link(st, {"name": "chained", "source": {"type": "stream", "stream_id": "$link:only-b"}})
    await c.start_link(st, "chained")
    chained = await until_count(c, st, "chained", 2)
    assert source_keys(chained) == [("$link:only-b", 0), ("$link:only-b", 1)]


async def test_without_backfill_only_events_after_creation_are_forwarded(c: GaterClient, st: str) -> None:
    await c.append_events(st, "s", [ev("Old")])
    await c.create_link(st, {"name": "new-only", "source": {"type": "stream", "stream_id": "s"}, "backfill": False})
    await c.append_events(st, "s", [ev("New")])
    await c.start_link(st, "new-only")
    got = await until_count(c, st, "new-only", 1)
    await c.append_events(st, "s", [ev("Marker")])  # forwarded in log order: nothing else comes before it
    got = await until_count(c, st, "new-only", 2)
    assert [e.event_type for e in got] == ["New", "Marker"]
    assert got[0].metadata["source_version"] == 1


async def test_binary_data_and_tags_travel_unchanged(c: GaterClient, st: str) -> None:
    payload = bytes(range(256))
    await c.append_events(st, "bin", [ev("Blob", payload, data_content_type="application/octet-stream", tags=["t1"])])
    await c.create_link(st, {"name": "bin", "source": {"type": "stream", "stream_id": "bin"}})
    await c.start_link(st, "bin")
    got = await until_count(c, st, "bin", 1)
    assert (got[0].data, got[0].data_content_type, got[0].tags) == (payload, "application/octet-stream", ["t1"])


# --- exactly once ---------------------------------------------------------------------------------------


def tx(n: int) -> dict[str, Any]:
    return ev("Tx", {"n": n, "even": n % 2 == 0})


def _supervisors(r: Running) -> list[Any]:
    return [x for x in r.resources if type(x).__name__ == "Supervisor"]


async def test_exactly_once_through_stop_start_restarts_and_two_instances(
    link_server: NatsServer, link_services: Running, c: GaterClient, st: str
) -> None:
    """Appends keep coming while the link is stopped and started, while a second instance runs,
    and while every link instance is killed (leases not released) and a new one takes over:
    ``$link:<name>`` ends up with every matching event once, in order, and nothing else."""
    streams = [f"acct-{i}" for i in range(4)]
    for s in streams:  # backfill material
        await c.append_events(st, s, [tx(k) for k in range(25)])
    stop_writing = asyncio.Event()
    counts = dict.fromkeys(streams, 25)

    async def writer() -> None:
        i = 0
        while not stop_writing.is_set():
            s = streams[i % len(streams)]
            await c.append_events(st, s, [tx(counts[s]), tx(counts[s] + 1)])
            counts[s] += 2
            i += 1
            await asyncio.sleep(0.01)

    flt = {"field": "data.n", "op": "matches", "value": "x"}  # never: ints are not strings
    await c.create_link(st, {"name": "none", "source": {"type": "all"}, "filter": flt})
    await c.create_link(
        st,
        {
            "name": "even",
            "source": {"type": "stream_pattern", "pattern": "acct-*"},
            "filter": {"field": "data.even", "op": "=", "value": True},
        },
    )
    second = await start_services(["link"], _settings(link_server.url))
    third: Running | None = None
    task = asyncio.create_task(writer())
    try:
        await c.start_link(st, "even")
        await c.start_link(st, "none")
        await until_count(c, st, "even", 30)
        await c.stop_link(st, "even")
        n_stopped = len(await derived(c, st, "even"))
        # stopped means stopped: the writer goes on, and "none" (same source, same instances)
        # processes 20 more events while "even" copies nothing
        later = sum(counts.values()) + 20
        await eventually(lambda: c.link_info(st, "none"), lambda i: i.events_filtered >= later)
        assert len(await derived(c, st, "even")) == n_stopped
        await c.start_link(st, "even")
        await until_count(c, st, "even", n_stopped + 10)
        # kill every link instance that may drive it (as kill -9 would: no lease released)
        for sup in [*_supervisors(link_services), *_supervisors(second)]:
            await sup.abandon()
        written = sum(counts.values())
        await eventually(lambda: asyncio.sleep(0, sum(counts.values())), lambda n: n >= written + 10)  # appends go on
        third = await start_services(["link"], _settings(link_server.url))
        n_before = len(await derived(c, st, "even"))
        await until_count(c, st, "even", n_before + 10, within=20)
    finally:
        stop_writing.set()
        await task
        for sup in _supervisors(link_services):
            await sup.start()
        await second.stop()
        if third is not None:
            await third.stop()
    # a last append as the marker: the link forwards in log order, so once its copy is there, no
    # copy of anything before it is still to come
    marker = streams[0]
    await c.append_events(st, marker, [tx(counts[marker]), tx(counts[marker] + 1)])
    counts[marker] += 2
    expected = [(s, v) for s in streams for v in range(counts[s]) if v % 2 == 0]  # n == version
    last = (marker, counts[marker] - 2 + (counts[marker] % 2))  # the marker's even event
    got = await eventually(lambda: derived(c, st, "even"), lambda g: last in source_keys(g), within=20)
    assert_exactly_once(got, expected)
    info = await eventually(lambda: c.link_info(st, "even"), lambda i: i.lag == 0 and i.events_processed == len(got))
    assert info.events_filtered == sum(counts.values()) - len(got)
    total = sum(counts.values())
    await eventually(lambda: c.link_info(st, "none"), lambda i: i.events_filtered == total)
    assert await derived(c, st, "none") == []


async def test_lost_progress_never_copies_twice(c: GaterClient, st: str) -> None:
    """The derived stream is the checkpoint: with the progress counters gone (as if the instance
    died after appending and before writing them), forwarding resumes after the last event in
    ``$link:<name>`` and copies nothing twice."""
    await c.append_events(st, "p", [ev("P", {"i": i}) for i in range(5)])
    await c.append_events(st, "p", [ev("P", {"i": i}) for i in range(5, 8)])
    await c.create_link(st, {"name": "p", "source": {"type": "stream", "stream_id": "p"}})
    await c.start_link(st, "p")
    await until_count(c, st, "p", 8)
    await c.stop_link(st, "p")
    kv = await c.nc.jetstream().key_value("esdb-links")
    await kv.delete(f"stat.{st}.{hashlib.sha256(b'p').hexdigest()[:32]}")
    await c.start_link(st, "p")
    await c.append_events(st, "p", [ev("P", {"i": 8})])
    await until_count(c, st, "p", 9)
    # a marker: forwarded in log order, so no second copy of 0..8 can come after it
    await c.append_events(st, "p", [ev("P", {"i": 9})])
    assert_exactly_once(await until_count(c, st, "p", 10), [("p", v) for v in range(10)])
    info = await eventually(lambda: c.link_info(st, "p"), lambda i: i.lag == 0 and i.events_processed >= 1)
    assert info.events_processed == 5  # counted again from the checkpoint's append (3 events), then 2 new


async def test_memory_pressure_slows_backfill(link_server: NatsServer, st: str) -> None:
    """At critical memory (forced by configuration: a 1-byte limit) the backfill fetches 8
    appends at a time with a pause between batches; it still completes."""
    # a separate prefix: a universe of its own on the same server, so only this instance serves it
    settings = _settings(
        link_server.url, subject_prefix="lm", service_name_prefix="lm", memory=MemorySettings(limit_bytes=1)
    )
    running = await start_services(["stream", "link"], settings)
    nc = await jetstream.connect(link_server.url)
    c = GaterClient(nc, prefix="lm", timeout=10)
    try:
        for i in range(48):
            await c.append_events(st, "slow", [ev("E", {"i": i})])
        await c.create_link(st, {"name": "slow", "source": {"type": "stream", "stream_id": "slow"}})
        started = time.monotonic()
        await c.start_link(st, "slow")
        got = await until_count(c, st, "slow", 48, within=30)
        elapsed = time.monotonic() - started
        assert [e.data["i"] for e in got] == list(range(48))
        assert elapsed >= 1.0, elapsed  # 6 batches of 8 with 0.25 s between them
    finally:
        await nc.drain()
        await running.stop()


# --- the ops' contract ------------------------------------------------------------------------------------


async def test_create_get_list_delete_and_errors(c: GaterClient, st: str) -> None:
    await c.append_events(st, "x", [ev("X")])
    spec = {"name": "l1", "source": {"type": "stream", "stream_id": "x"}}
    await c.create_link(st, spec)
    with pytest.raises(AlreadyExistsError):
        await c.create_link(st, {**spec, "source": {"type": "all"}})
    await c.create_link(st, {"name": "l0", "source": {"type": "all"}})
    assert [x.name for x in await c.list_links(st)] == ["l0", "l1"]
    got = await c.get_link(st, "l1")
    assert (got.source, got.filter, got.transform, got.status) == (
        {"type": "stream", "stream_id": "x"},
        None,
        None,
        "stopped",
    )
    for op in (c.start_link, c.stop_link, c.get_link, c.link_info, c.delete_link):
        with pytest.raises(NotFoundError):
            await op(st, "nope")
    await c.start_link(st, "l1")
    await until_count(c, st, "l1", 1)
    await c.delete_link(st, "l1")  # keeps the derived stream
    assert len(await derived(c, st, "l1")) == 1
    with pytest.raises(NotFoundError):
        await c.get_link(st, "l1")
    await c.create_link(st, spec)  # the name is free again; the stream it writes is the same
    await c.start_link(st, "l1")
    await c.append_events(st, "x", [ev("X2")])
    got_events = await until_count(c, st, "l1", 2)
    assert [e.event_type for e in got_events] == ["X", "X2"]  # resumed, not copied twice
    await c.delete_link(st, "l1", delete_stream=True)
    assert await derived(c, st, "l1") == []
    assert [x.name for x in await c.list_links(st)] == ["l0"]


async def test_a_refused_copy_stops_the_link_with_status_error(c: GaterClient, st: str) -> None:
    """The stream service refuses a derived event (here: its schema requires the field the
    transform removes): the link stops with status error and says why; start tries again."""
    await c.register_schema(st, "Order", {"version": 1, "json_schema": {"type": "object", "required": ["amount"]}})
    await c.append_events(st, "o", [ev("Order", {"amount": 5})])
    await c.create_link(
        st,
        {"name": "broken", "source": {"type": "stream", "stream_id": "o"}, "transform": {"remove_fields": ["amount"]}},
    )
    await c.start_link(st, "broken")
    info = await eventually(lambda: c.link_info(st, "broken"), lambda i: i.status == "error")
    assert info.error and "amount" in info.error and not info.active
    assert await derived(c, st, "broken") == []
    assert (await c.start_link(st, "broken")).status == "running"
    info = await eventually(lambda: c.link_info(st, "broken"), lambda i: i.status == "error")
    assert info.events_processed == 0


async def test_invalid_specs_and_cycles_are_invalid_requests(c: GaterClient, st: str) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"name": "x", "source": {"type": "nope"}}, "source"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "data.a", "op": "~", "value": 1}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "transform": {"remove_fields": [""]}}, "transform"),
        ({"name": "x", "source": {"type": "stream", "stream_id": "$link:x"}}, "source.stream_id"),
        ({"source": {"type": "all"}}, "name"),
    ]
    for body, field in bad:
        with pytest.raises(InvalidRequestError) as exc:
            await c.request(st, "link", "create", body)
        assert exc.value.details["field"].startswith(field), exc.value.details
    await c.create_link(st, {"name": "a", "source": {"type": "stream", "stream_id": "$link:b"}})
    with pytest.raises(InvalidRequestError) as exc:
        await c.create_link(st, {"name": "b", "source": {"type": "stream", "stream_id": "$link:a"}})
    assert exc.value.details["reason"] == "cycle"
    assert [x.name for x in await c.list_links(st)] == ["a"]


async def test_link_survives_a_nats_server_restart(link_server: NatsServer, c: GaterClient, st: str) -> None:
    """Definitions, consumers and the derived stream are JetStream state: after nats-server stops
    and starts on the same data, forwarding resumes with nothing lost or doubled. (Last in this
    module: it restarts the module's server.)"""
    await c.append_events(st, "r", [ev("R", {"i": i}) for i in range(10)])
    await c.create_link(st, {"name": "durable", "source": {"type": "stream", "stream_id": "r"}})
    await c.start_link(st, "durable")
    await until_count(c, st, "durable", 10)
    await asyncio.to_thread(link_server.stop)
    await asyncio.to_thread(link_server.start)
    for _ in range(100):  # clients reconnect on their own
        try:
            await c.append_events(st, "r", [ev("R", {"i": 10})])
            break
        except Exception:
            await asyncio.sleep(0.1)
    await until_count(c, st, "durable", 11, within=30)
    # a marker: forwarded in log order, so no second copy of 0..10 can come after it
    await c.append_events(st, "r", [ev("R", {"i": 11})])
    got = await until_count(c, st, "durable", 12)
    assert_exactly_once(got, [("r", v) for v in range(12)])
    assert got[10].data == {"i": 10}
