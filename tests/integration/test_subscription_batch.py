"""Batch deliveries and cumulative acks of persistent subscriptions (issue 11, ADR 0024), over a
real nats-server: one message carrying several events, one reply acking them all, ``-NAK``,
redelivery and parking of batches, cumulative acks (native and ``subscription.ack``), the
defaults left as they were, old definitions, bounds, and a forged batch-ack subject.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


@pytest.fixture(scope="module")
def batch_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
async def batch_services(batch_server: NatsServer) -> AsyncIterator[Running]:
    settings = Settings(nats_url=batch_server.url, auto_create_stores=True, lease_ttl_s=1.0)
    running = await start_services(["stream", "subscription"], settings)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def c(batch_services: Running, batch_server: NatsServer) -> AsyncIterator[GaterClient]:
    nc = await jetstream.connect(batch_server.url)
    try:
        yield GaterClient(nc, timeout=10)
    finally:
        await nc.drain()


@pytest.fixture
def st() -> str:
    return "b" + uuid.uuid4().hex[:10]


def ev(i: int) -> dict[str, Any]:
    return {"event_type": "X", "data": {"i": i}}


async def _listen(nc: Client) -> tuple[str, Subscription]:
    subject = "deliver." + uuid.uuid4().hex[:12]
    sub = await nc.subscribe(subject)
    await nc.flush()
    return subject, sub


def _events(msg: Msg) -> list[dict[str, Any]]:
    h = msg.headers or {}
    body = msgpack.unpackb(msg.data) if h.get("Content-Type") == "application/msgpack" else json.loads(msg.data)
    return list(body["events"])


async def _batches(sub: Subscription, n_events: int, within: float = 15.0) -> list[Msg]:
    """Batch messages until ``n_events`` events came."""
    out: list[Msg] = []
    seen = 0
    deadline = time.monotonic() + within
    while seen < n_events:
        msg = await sub.next_msg(max(0.05, deadline - time.monotonic()))
        out.append(msg)
        seen += len(_events(msg))
    return out


async def _until(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"condition not met within {within}s; last value {value!r}"
        await asyncio.sleep(0.05)


async def _checkpoint(c: GaterClient, st: str, name: str) -> int | None:
    return (await c.get_subscription(st, name)).checkpoint


async def _barrier(c: GaterClient, st: str, name: str) -> None:
    """The driver handles its control messages in order: once this (harmless) forwarded ack of
    nothing is answered, every native reply published before it has been handled."""
    await c.ack_event(st, "no-such-stream", name, 0)


def _ctl(msg: Msg, kind: str) -> tuple[str, list[str]]:
    assert msg.reply
    root, rest = msg.reply.split(f".{kind}.", 1)
    return root, rest.split(".")


async def _consumer(c: GaterClient, st: str, name: str) -> dict[str, Any]:
    info = await c.get_subscription(st, name)
    reply = await c.nc.request(f"$JS.API.CONSUMER.INFO.esdb-log-{st}.sub-{info.key}", b"", timeout=5)
    return dict(json.loads(reply.data))


# --- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_a_batch_carries_events_in_log_order_with_headers_and_one_reply_acks_them_all(
    c: GaterClient, st: str, codec: str
) -> None:
    for a in range(5):  # five appends of 50 events
        await c.append_events(st, "b", [ev(a * 50 + i) for i in range(50)])
    subject, sub = await _listen(c.nc)
    info = await c.save_subscription(
        st, "stream", "b", "batched", "start", subject, delivery="batch", batch_max=100, codec=codec
    )
    assert (info.delivery, info.batch_max, info.ack) == ("batch", 100, "each")
    msgs = await _batches(sub, 250)
    versions: list[int] = []
    for msg in msgs:
        events = _events(msg)
        h = msg.headers or {}
        assert len(events) >= 1 and len(events) <= 100  # never empty, never over batch_max
        assert h["Esdb-Subscription"] == "batched"
        assert h["Esdb-Subscription-Key"] == info.key
        assert h["Esdb-Batch-Count"] == str(len(events))
        assert h["Esdb-Batch-First-Position"] == str(events[0]["position"])
        assert h["Esdb-Batch-Last-Position"] == str(events[-1]["position"])
        assert h["Esdb-Delivery-Attempt"] == "1"
        assert ".b." in (msg.reply or "")
        assert all(e["stream_id"] == "b" and e["event_type"] == "X" for e in events)
        versions += [e["version"] for e in events]
    assert versions == list(range(250))  # in log order, each once
    assert [e["data"]["i"] for e in _events(msgs[0])][:3] == [0, 1, 2]
    for msg in msgs:
        await msg.respond(b"")
    await _until(lambda: _checkpoint(c, st, "batched"), lambda v: v == 249)
    assert (await c.get_subscription(st, "batched")).lag_events == 0
    await sub.unsubscribe()


async def test_an_acked_batch_is_not_delivered_again(c: GaterClient, st: str) -> None:
    await c.append_events(st, "a", [ev(i) for i in range(30)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(
        st, "stream", "a", "acked", "start", subject, delivery="batch", batch_max=10, ack_wait_ms=300
    )
    for msg in await _batches(sub, 30):
        await msg.respond(b"+ACK")
    await _barrier(c, st, "acked")
    await asyncio.sleep(0.8)  # past ack_wait: anything unacked would come back now, before the marker
    await c.append_events(st, "a", [ev(99)])
    after = await _batches(sub, 1)
    assert [e["version"] for e in _events(after[0])] == [30]
    await sub.unsubscribe()


async def test_a_nak_redelivers_the_batch(c: GaterClient, st: str) -> None:
    await c.append_events(st, "n", [ev(i) for i in range(5)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(
        st, "stream", "n", "naks", "start", subject, delivery="batch", ack_wait_ms=10_000, backoff_ms=[100]
    )
    first = (await _batches(sub, 5))[0]
    assert [e["version"] for e in _events(first)] == [0, 1, 2, 3, 4]
    await first.respond(b"-NAK")
    again = await _batches(sub, 5)
    assert [e["version"] for m in again for e in _events(m)] == [0, 1, 2, 3, 4]
    assert {(m.headers or {})["Esdb-Delivery-Attempt"] for m in again} == {"2"}
    for m in again:
        await m.respond(b"")
    await _until(lambda: _checkpoint(c, st, "naks"), lambda v: v == 4)
    await sub.unsubscribe()


async def test_an_unacked_batch_comes_back_then_is_parked(c: GaterClient, st: str) -> None:
    await c.append_events(st, "p", [ev(0), ev(1)])
    await c.append_events(st, "p", [ev(2)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(
        st,
        "stream",
        "p",
        "parks",
        "start",
        subject,
        delivery="batch",
        ack_wait_ms=300,
        max_deliver=2,
        backoff_ms=[200, 300],
    )
    got = await _batches(sub, 6)  # two attempts of three events, never acked
    attempts = sorted(((m.headers or {})["Esdb-Delivery-Attempt"], e["version"]) for m in got for e in _events(m))
    assert attempts == [("1", 0), ("1", 1), ("1", 2), ("2", 0), ("2", 1), ("2", 2)]
    await _until(lambda: c.get_subscription(st, "parks"), lambda i: i.parked == 3 and i.checkpoint == 2)
    await c.append_events(st, "p", [ev(3)])
    after = await _batches(sub, 1)  # no third attempt before the marker
    assert [e["version"] for e in _events(after[0])] == [3]
    await sub.unsubscribe()


# --- cumulative acks ----------------------------------------------------------------------------------


async def test_a_cumulative_native_reply_acks_every_event_before_it(c: GaterClient, st: str) -> None:
    for i in range(5):  # five appends: the checkpoint moves per append
        await c.append_events(st, "k", [ev(i)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(st, "stream", "k", "cumul", "start", subject, ack="cumulative")
    msgs = [await sub.next_msg(10) for _ in range(5)]
    assert [int((m.headers or {})["Esdb-Version"]) for m in msgs] == [0, 1, 2, 3, 4]
    await msgs[3].respond(b"")  # acks 0..3
    await _until(lambda: _checkpoint(c, st, "cumul"), lambda v: v == 3)
    assert (await c.get_subscription(st, "cumul")).lag_events == 1
    await msgs[4].respond(b"")
    await _until(lambda: _checkpoint(c, st, "cumul"), lambda v: v == 4)
    await sub.unsubscribe()


async def test_a_cumulative_ack_request_acks_every_event_before_it(c: GaterClient, st: str) -> None:
    for i in range(4):
        await c.append_events(st, "q", [ev(i)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(st, "stream", "q", "per-event", "start", subject)  # ack "each"
    msgs = [await sub.next_msg(10) for _ in range(4)]
    assert len(msgs) == 4
    await c.ack_event(st, "q", "per-event", 1)  # not cumulative: 0 stays open
    await _barrier(c, st, "per-event")
    assert await _checkpoint(c, st, "per-event") is None
    await c.ack_event(st, "q", "per-event", 2, cumulative=True)  # 0, 1, 2
    await _until(lambda: _checkpoint(c, st, "per-event"), lambda v: v == 2)
    await sub.unsubscribe()


async def test_a_cumulative_subscription_takes_single_acks_on_request(c: GaterClient, st: str) -> None:
    for i in range(3):
        await c.append_events(st, "s", [ev(i)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(st, "stream", "s", "cumul-single", "start", subject, ack="cumulative")
    msgs = [await sub.next_msg(10) for _ in range(3)]
    assert len(msgs) == 3
    await c.ack_event(st, "s", "cumul-single", 2, cumulative=False)  # only 2: 0 and 1 hold the checkpoint
    await _barrier(c, st, "cumul-single")
    assert await _checkpoint(c, st, "cumul-single") is None
    await c.ack_event(st, "s", "cumul-single", 1)  # the subscription's mode: 0 and 1
    await _until(lambda: _checkpoint(c, st, "cumul-single"), lambda v: v == 2)
    await sub.unsubscribe()


async def test_a_cumulative_batch_reply_acks_earlier_batches(c: GaterClient, st: str) -> None:
    await c.append_events(st, "cb", [ev(i) for i in range(30)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(
        st, "stream", "cb", "cumul-batch", "start", subject, delivery="batch", batch_max=10, ack="cumulative"
    )
    msgs = await _batches(sub, 30)
    assert len(msgs) == 3
    await msgs[-1].respond(b"")  # the last batch acks the two before it
    await _until(lambda: _checkpoint(c, st, "cumul-batch"), lambda v: v == 29)
    await sub.unsubscribe()


# --- defaults, old definitions, bounds ---------------------------------------------------------------


async def test_defaults_are_unchanged_per_event_deliveries_and_explicit_acks(c: GaterClient, st: str) -> None:
    await c.append_events(st, "d", [ev(0)])
    subject, sub = await _listen(c.nc)
    body = {"type": "stream", "selector": "d", "name": "plain", "subscriber": subject}
    raw = json.loads(
        (await c.nc.request(f"esdb.api.{st}.subscription.save", json.dumps(body).encode(), timeout=10)).data
    )
    assert not {"delivery", "batch_max", "ack"} & set(raw)  # the reply is as before the options
    msg = await sub.next_msg(10)
    assert json.loads(msg.data)["version"] == 0 and ".n." in (msg.reply or "")
    assert "Esdb-Batch-Count" not in (msg.headers or {})
    assert (await _consumer(c, st, "plain"))["config"]["ack_policy"] == "explicit"
    await c.save_subscription(st, "stream", "d", "batchy", "start", subject + "x", delivery="batch")
    assert (await _consumer(c, st, "batchy"))["config"]["ack_policy"] == "all"
    listed = json.loads((await c.nc.request(f"esdb.api.{st}.subscription.list", b"{}", timeout=10)).data)
    by_name = {s["name"]: s for s in listed["subscriptions"]}
    assert "delivery" not in by_name["plain"]
    assert (by_name["batchy"]["delivery"], by_name["batchy"]["batch_max"]) == ("batch", 100)
    await sub.unsubscribe()


async def test_a_definition_saved_before_the_options_loads_as_per_event(c: GaterClient, st: str) -> None:
    await c.append_events(st, "o", [ev(0)])
    subject, sub = await _listen(c.nc)
    info = await c.save_subscription(st, "stream", "o", "older", "start", subject)
    first = await sub.next_msg(10)
    await first.respond(b"")
    kv = await c.nc.jetstream().key_value(Subjects("esdb").subscriptions_bucket())
    key = f"def.{st}.{info.key}"
    stored = json.loads((await kv.get(key)).value or b"{}")
    for field in ("delivery", "batch_max", "ack", "consumer_ack"):
        stored.pop(field)
    await kv.put(key, json.dumps(stored).encode())  # as the previous version wrote it
    got = await c.get_subscription(st, "older")
    assert (got.delivery, got.ack) == ("event", "each")
    await c.append_events(st, "o", [ev(1)])
    msg = await sub.next_msg(10)
    assert json.loads(msg.data)["version"] == 1
    await msg.respond(b"")
    await _until(lambda: _checkpoint(c, st, "older"), lambda v: v == 1)
    await sub.unsubscribe()


@pytest.mark.parametrize(
    "extra",
    [
        {"batch_max": 0},
        {"batch_max": 1001},
        {"batch_max": "many"},
        {"delivery": "bulk"},
        {"ack": "all"},
    ],
)
async def test_bad_delivery_options_are_invalid_requests(c: GaterClient, st: str, extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        await c.save_subscription(st, "stream", "x", "bad", "start", "deliver.bad", **{"delivery": "batch", **extra})
    assert await c.get_subscriptions(st) == []


# --- attack -------------------------------------------------------------------------------------------


async def test_a_forged_batch_ack_subject_acks_nothing(c: GaterClient, st: str) -> None:
    """A batch's reply subject carries the driver's random token: the subject without it, or with
    another token, acks and naks nothing; the real reply does."""
    await c.append_events(st, "f", [ev(0), ev(1)])
    subject, sub = await _listen(c.nc)
    await c.save_subscription(st, "stream", "f", "forge", "start", subject, delivery="batch", ack_wait_ms=60_000)
    msg = (await _batches(sub, 2))[0]
    root, (token, number) = _ctl(msg, "b")
    for forged in (f"{root}.b.{number}", f"{root}.b.{'0' * len(token)}.{number}", f"{root}.b.{token[:-1]}x.{number}"):
        await c.nc.publish(forged, b"+ACK")
        await c.nc.publish(forged, b"-NAK")
    await _barrier(c, st, "forge")
    assert await _checkpoint(c, st, "forge") is None
    with pytest.raises(asyncio.TimeoutError):  # and no -NAK made it come back
        await sub.next_msg(0.5)
    await msg.respond(b"")
    await _until(lambda: _checkpoint(c, st, "forge"), lambda v: v == 1)
    await sub.unsubscribe()


# --- take-over ---------------------------------------------------------------------------------------


def _supervisors(r: Running) -> list[Any]:
    return [x for x in r.resources if type(x).__name__ == "Supervisor"]


async def test_a_take_over_never_acks_what_the_previous_instance_left_unacked(
    batch_server: NatsServer, batch_services: Running, c: GaterClient, st: str
) -> None:
    """Ack policy "all": one JetStream ack covers every commit before it. The commits a killed
    instance delivered and nobody acked must still come back after a take-over, even though
    the subscriber acks later commits from the new instance first."""
    settings = Settings(nats_url=batch_server.url, auto_create_stores=True, lease_ttl_s=1.0)
    for i in range(10):
        await c.append_events(st, "t", [ev(i)])
    subject, sub = await _listen(c.nc)
    module = _supervisors(batch_services)
    b: Running | None = None
    try:
        await c.save_subscription(
            st, "stream", "t", "taken", "start", subject, delivery="batch", batch_max=5, ack_wait_ms=2000
        )
        first = await _batches(sub, 10)  # never acked: the instance "dies" with them open
        assert sorted(e["version"] for m in first for e in _events(m)) == list(range(10))
        for sup in module:
            await sup.abandon()
        for i in range(10, 20):
            await c.append_events(st, "t", [ev(i)])
        b = await start_services(["subscription"], settings)
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while set(seen) != set(range(20)):
            msg = await sub.next_msg(max(0.05, deadline - time.monotonic()))
            seen += [e["version"] for e in _events(msg)]
            await msg.respond(b"")  # the new commits are acked before the old ones come back
        await _until(lambda: _checkpoint(c, st, "taken"), lambda v: v == 19, within=15)
    finally:
        for sup in module:
            await sup.start()
        if b is not None:
            await b.stop()
        await sub.unsubscribe()
