"""The seed's event catalogue reaches attached handlers where it happens (docs/telemetry.md):
requests in the adapter, service instances registering and stopping, discovery, channel
broadcasts, and a NATS connection losing and finding its server. The session's services run in
this process, so ``attach`` sees their events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import StreamNotFoundError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.telemetry import (
    CHANNEL_BROADCAST,
    NODE_DOWN,
    NODE_UP,
    REQUEST_ERROR,
    REQUEST_START,
    REQUEST_STOP,
    WORKER_LOOKUP,
    WORKER_REGISTERED,
    WORKER_UNREGISTERED,
    attach,
    detach,
    watch_connection,
)
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer

pytestmark = pytest.mark.timeout(120)

Seen = list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]]


@pytest.fixture
def seen() -> Iterator[Callable[[list[tuple[str, ...]]], Seen]]:
    """``seen(events)``: attach a handler for ``events``; returns the list it appends to."""
    ids: list[str] = []

    def make(events: list[tuple[str, ...]]) -> Seen:
        out: Seen = []
        hid = f"test-{uuid.uuid4().hex}"
        assert attach(hid, events, lambda e, m, md, cfg: cfg.append((e, m, md)), out)
        ids.append(hid)
        return out

    yield make
    for hid in ids:
        detach(hid)


async def _until(pred: Callable[[], bool], within: float = 10.0) -> None:
    """Bounded wait: events are emitted right after the reply is sent, maybe after it arrives."""
    deadline = asyncio.get_running_loop().time() + within
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "event not seen in time"
        await asyncio.sleep(0.02)


async def test_a_request_emits_start_and_stop_with_duration(
    services: Running, nc: Client, store: str, seen: Callable[..., Seen]
) -> None:
    events = seen([REQUEST_START, REQUEST_STOP, REQUEST_ERROR])
    await nc.request(f"esdb.api.{store}.stream.version", json.dumps({"stream_id": "x"}).encode(), timeout=5)

    def mine() -> Seen:
        return [x for x in events if x[2]["store_id"] == store]

    await _until(lambda: len(mine()) == 2)
    (start, start_m, start_md), (stop, stop_m, stop_md) = mine()
    assert (start, stop) == (REQUEST_START, REQUEST_STOP)
    assert start_md == {"service": "esdb-stream", "op": "stream.version", "store_id": store, "request_type": "version"}
    assert isinstance(start_m["system_time"], int) and start_m["system_time"] > 1_600_000_000_000  # ms
    assert stop_md == {**start_md, "result": "success"}
    assert isinstance(stop_m["duration"], int) and stop_m["duration"] >= 0  # microseconds


async def test_an_error_reply_emits_request_error_with_the_code(
    services: Running, nc: Client, store: str, seen: Callable[..., Seen]
) -> None:
    events = seen([REQUEST_STOP, REQUEST_ERROR])
    client = GaterClient(nc, retry=None)
    with pytest.raises(StreamNotFoundError):
        await client.stream_forward(store, "never-written", 0, 10)
    bad = await nc.request(f"esdb.api.{store}.stream.version", b"{", timeout=5)
    assert bad.headers is not None and bad.headers["Nats-Service-Error-Code"] == "400"

    def mine() -> Seen:
        return [x for x in events if x[2]["store_id"] == store]

    await _until(lambda: len(mine()) == 2)
    assert [(e, md["op"], md["code"], md["reason"]) for e, _, md in mine()] == [
        (REQUEST_ERROR, "stream.forward", "stream_not_found", "stream_not_found"),
        (REQUEST_ERROR, "stream.version", "invalid_request", "invalid_request"),
    ]
    assert all(isinstance(m["duration"], int) for _, m, _ in mine())


async def test_a_channel_publish_emits_broadcast_with_recipient_count(
    services: Running, nc: Client, seen: Callable[..., Seen]
) -> None:
    events = seen([CHANNEL_BROADCAST])
    client = GaterClient(nc, retry=None)
    topic = "tel" + uuid.uuid4().hex[:8]

    def mine() -> Seen:
        return [x for x in events if x[2]["topic"] == topic]

    plain = await client.subscribe("events", topic)  # a plain NATS subscriber: not counted
    await client.publish("events", topic, {"n": 0})
    await _until(lambda: len(mine()) == 1)
    forwards = [await client.subscribe("events", topic, "") for _ in range(2)]  # two forwardings
    await client.publish("events", topic, {"n": 1})
    await _until(lambda: len(mine()) == 2)
    for f in forwards:
        assert (await f.next(5)).message == {"n": 1}
        await client.unsubscribe(f)
    await plain.close()
    assert [m["recipient_count"] for _, m, _ in mine()] == [0, 2]
    _, _, md = mine()[1]
    assert md["channel"] == "events" and md["priority"] == "high"


async def test_starting_and_stopping_a_service_registers_and_unregisters_a_worker(
    nats_url: str, services: Running, seen: Callable[..., Seen]
) -> None:
    events = seen([WORKER_REGISTERED, WORKER_UNREGISTERED])
    prefix = "t" + uuid.uuid4().hex[:8]
    running = await start_services(
        ["schema"], Settings(nats_url=nats_url, subject_prefix=prefix, service_name_prefix=prefix)
    )
    instance = running.services[0].service.id

    def mine() -> Seen:
        return [x for x in events if x[2]["service"] == f"{prefix}-schema"]

    try:
        assert [(e, md["instance_id"]) for e, _, md in mine()] == [(WORKER_REGISTERED, instance)]
        # discovery: the client's get_workers is the seed's worker lookup
        lookups = seen([WORKER_LOOKUP])
        found = await GaterClient(running.nc, prefix=prefix, retry=None).get_workers(f"{prefix}-schema")
        assert [w.id for w in found] == [instance]
        assert lookups[-1][1]["instance_count"] == 1 and lookups[-1][2] == {"service": f"{prefix}-schema"}
    finally:
        await running.stop()
    assert [(e, md["instance_id"]) for e, _, md in mine()] == [
        (WORKER_REGISTERED, instance),
        (WORKER_UNREGISTERED, instance),
    ]
    _, m, md = mine()[-1]
    assert md["reason"] == "stopped" and isinstance(md["pid"], int) and isinstance(m["system_time"], int)


async def test_losing_and_finding_the_server_emits_node_down_and_up(seen: Callable[..., Seen]) -> None:
    events = seen([NODE_UP, NODE_DOWN])
    tag = "conn-" + uuid.uuid4().hex[:8]

    def mine() -> list[tuple[tuple[str, ...], Any]]:
        return [(e, md["reason"]) for e, _, md in events if md["connection"] == tag]

    server = NatsServer(name="teldown").start()
    try:
        nc = await jetstream.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        watch_connection(nc, tag)
        watch_connection(nc, tag)  # once per connection: no double events
        try:
            await asyncio.to_thread(server.stop)
            await _until(lambda: mine() == [(NODE_DOWN, "disconnected")])
            await asyncio.to_thread(server.start)  # the same port
            await _until(lambda: (NODE_UP, "reconnected") in mine())
            down = next(md for e, _, md in events if e == NODE_DOWN and md["connection"] == tag)
            assert down["node"] == "teldown" and down["member_count"] >= 1
            await nc.flush(timeout=5)
        finally:
            await nc.close()
        assert mine().count((NODE_DOWN, "disconnected")) == 1  # closing is not a lost node
    finally:
        server.cleanup()
