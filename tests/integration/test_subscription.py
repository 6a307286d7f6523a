"""Persistent subscriptions over the wire, against a real nats-server (SPEC.md §4, issue 3).

This module runs its own server and service instances (lease TTL 1 s) so it can kill and
restart them without disturbing the session's services.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.shared.client import Delivery, GaterClient
from esdb_gater.shared.core.errors import AlreadyExistsError, InvalidRequestError, SubscriptionNotFoundError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


@pytest.fixture(scope="module")
def sub_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def _settings(url: str) -> Settings:
    return Settings(nats_url=url, auto_create_stores=True, lease_ttl_s=1.0)


@pytest.fixture(scope="module")
async def sub_services(sub_server: NatsServer) -> AsyncIterator[Running]:
    running = await start_services(["stream", "subscription"], _settings(sub_server.url))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def c(sub_services: Running, sub_server: NatsServer) -> AsyncIterator[GaterClient]:
    nc = await jetstream.connect(sub_server.url)
    try:
        yield GaterClient(nc, timeout=10)
    finally:
        await nc.drain()


@pytest.fixture
def st() -> str:
    return "s" + uuid.uuid4().hex[:10]


def inbox() -> str:
    return "deliver." + uuid.uuid4().hex[:12]


async def collect(deliveries: Any, n: int, *, ack: bool = True, within: float = 10.0) -> list[Delivery]:
    out: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(out) < n:
        d = await deliveries.next(max(0.05, deadline - time.monotonic()))
        if ack:
            await d.ack()
        out.append(d)
    return out


Mark = tuple[str, str, int]  # (subscription, stream id, version) of a marker event


async def before_marks(deliveries: Any, marks: list[Mark], within: float = 10.0) -> list[Delivery]:
    """Ack deliveries until every marker event has come; return the others that came meanwhile
    (expected: nothing). A driver delivers its subscription's events in log order, so a marker
    appended after what the test waited for comes after anything still due before it."""
    left = set(marks)
    extra: list[Delivery] = []
    deadline = time.monotonic() + within
    while left:
        d = await deliveries.next(max(0.05, deadline - time.monotonic()))
        key = (d.subscription, d.stream_id, d.version)
        if key in left:
            left.discard(key)
            await d.ack()
        else:
            extra.append(d)
    return extra


def ev(t: str, data: Any = None, tags: list[str] | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"event_type": t, "data": data if data is not None else {}}
    if tags is not None:
        e["tags"] = tags
    return e


# --- types ------------------------------------------------------------------------------------


async def _seed(c: GaterClient, st: str) -> None:
    await c.append_events(st, "orders-1", [ev("Placed", {"total": 5}, ["vip"]), ev("Paid", {"total": 5})])
    await c.append_events(st, "orders-2", [ev("Placed", {"total": 50, "currency": "EUR"})])
    await c.append_events(st, "users-1", [ev("Joined", {"name": "a"}, ["new", "vip"])])
    await c.append_events(st, "orders.x", [ev("Placed", {"total": 1})])


@pytest.mark.parametrize(
    ("type_", "selector", "expected"),
    [
        ("stream", "orders-1", [("orders-1", 0), ("orders-1", 1)]),
        (
            "stream",
            "$all",
            [("orders-1", 0), ("orders-1", 1), ("orders-2", 0), ("users-1", 0), ("orders.x", 0)],
        ),
        ("event_type", "Placed", [("orders-1", 0), ("orders-2", 0), ("orders.x", 0)]),
        ("event_pattern", "orders-*", [("orders-1", 0), ("orders-1", 1), ("orders-2", 0)]),
        ("event_payload", {"total": 50}, [("orders-2", 0)]),
        ("tags", ["vip", "nope"], [("orders-1", 0), ("users-1", 0)]),
    ],
    ids=["stream", "all", "event_type", "event_pattern", "event_payload", "tags"],
)
async def test_each_type_delivers_exactly_its_events_in_order(
    c: GaterClient, st: str, type_: str, selector: Any, expected: list[tuple[str, int]]
) -> None:
    await _seed(c, st)
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, type_, selector, "sub", "start", subject)
        got = await collect(d, len(expected))
        assert [(x.stream_id, x.version) for x in got] == expected
        assert all(x.attempt == "1" and x.subscription == "sub" for x in got)
        # live: a matching event appended now is delivered too
        await c.append_events(st, "orders-1", [ev("Placed", {"total": 50}, ["vip"])])
        live = await collect(d, 1)
        assert (live[0].stream_id, live[0].version) == ("orders-1", 2)
        marker = await c.append_events(st, "orders-1", [ev("Placed", {"total": 50}, ["vip"])])  # every type's
        assert await before_marks(d, [("sub", "orders-1", marker.version)]) == []


async def test_delivery_carries_headers_body_and_native_ack_moves_checkpoint(c: GaterClient, st: str) -> None:
    await c.append_events(st, "acct", [ev("Opened", {"n": 1}), ev("Credited", {"n": 2})])
    subject = inbox()
    nc: Client = c.nc
    sub = await nc.subscribe(subject)
    await c.save_subscription(st, "stream", "acct", "hdrs", "start", subject)
    msg = await sub.next_msg(10)
    h = msg.headers or {}
    assert (h["Esdb-Subscription"], h["Esdb-Stream-Id"], h["Esdb-Version"], h["Esdb-Delivery-Attempt"]) == (
        "hdrs",
        "acct",
        "0",
        "1",
    )
    body = json.loads(msg.data)
    assert (body["event_type"], body["data"], body["position"]) == (
        "Opened",
        {"n": 1},
        int(h["Esdb-Position"]),
    )
    assert msg.reply
    await msg.respond(b"")  # any reply but -NAK acknowledges
    second = await sub.next_msg(10)
    # the driver takes its control messages in order: once this later (harmless) ack of the same
    # event is answered, it has handled the reply above
    await c.ack_event(st, "acct", "hdrs", 0)
    # the checkpoint moves per append: both events of the append must be acknowledged
    assert await _checkpoint(c, st, "hdrs") is None
    await second.respond(b"+ACK")
    await _eventually(lambda: _checkpoint(c, st, "hdrs"), 1)
    await sub.unsubscribe()


async def _checkpoint(c: GaterClient, st: str, name: str) -> int | None:
    return (await c.get_subscription(st, name)).checkpoint


async def _until(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"condition not met within {within}s; last value {value!r}"
        await asyncio.sleep(0.1)


async def _eventually(probe: Any, expected: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        value = await probe()
        if value == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {expected!r}, last saw {value!r}")


# --- start_from -----------------------------------------------------------------------------------


async def test_start_from_end_version_position_and_timestamp(c: GaterClient, st: str) -> None:
    r = await c.append_events(st, "s1", [ev("A", {"i": i}) for i in range(5)])
    r2 = await c.append_events(st, "s1", [ev("B", {"i": i}) for i in range(5, 8)])
    assert (r.version, r2.version) == (4, 7)
    # a time between the two appends, from the server's own timestamps (µs)
    stored = await c.stream_forward(st, "s1", 0, 8)
    middle_us = stored[4].epoch_us + 1
    assert stored[5].epoch_us >= middle_us, "precondition: the appends have different times"

    cases: list[tuple[str, Any, list[int]]] = [
        ("stream", "start", list(range(8))),
        ("stream", 3, [3, 4, 5, 6, 7]),  # a version inside a multi-event append
        ("stream", {"version": 6}, [6, 7]),
        ("stream", {"position": r2.position}, [5, 6, 7]),
        ("stream", {"timestamp": middle_us}, [5, 6, 7]),
        ("stream", "end", []),
    ]
    subs = []
    for i, (type_, start, _) in enumerate(cases):
        subject = inbox()
        d = c.deliveries(subject)
        await d.__aenter__()
        await c.save_subscription(st, type_, "s1", f"sf{i}", start, subject)
        subs.append(d)
    for (_, start, expected), d in zip(cases, subs, strict=True):
        got = await collect(d, len(expected)) if expected else []
        assert [x.version for x in got] == expected, start
    # all of them continue live
    await c.append_events(st, "s1", [ev("C")])
    for d in subs:
        assert [x.version for x in await collect(d, 1)] == [8]
    await c.append_events(st, "s1", [ev("Marker")])
    for i, d in enumerate(subs):
        assert await before_marks(d, [(f"sf{i}", "s1", 9)]) == []
        await d.__aexit__()


async def test_start_from_position_for_other_types(c: GaterClient, st: str) -> None:
    await c.append_events(st, "a", [ev("T")])
    r = await c.append_events(st, "b", [ev("T")])
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, "event_type", "T", "pos", r.position, subject)
        got = await collect(d, 1)
        assert (
            got[0].stream_id,
            got[0].position if hasattr(got[0], "position") else got[0].event["position"],
        ) == (
            "b",
            r.position,
        )
        await c.append_events(st, "c", [ev("T")])
        assert await before_marks(d, [("pos", "c", 0)]) == []


# --- catch-up + live under load -------------------------------------------------------------------


async def test_catch_up_then_live_while_appending_delivers_every_event_exactly_once(c: GaterClient, st: str) -> None:
    """10 000 events: half stored before the subscription, half appended while it catches up."""
    streams = [f"load-{i}" for i in range(10)]

    async def write(stream: str, rounds: int) -> None:
        for r in range(rounds):
            await c.append_events(st, stream, [ev("L", {"r": r, "k": k}) for k in range(10)])

    await asyncio.gather(*(write(s, 50) for s in streams))  # 5 000 events
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, "stream", "$all", "load", "start", subject, max_in_flight=512)
        writer = asyncio.ensure_future(asyncio.gather(*(write(s, 50) for s in streams)))  # 5 000 more
        got = await collect(d, 10_000, within=90)
        await writer
        await c.append_events(st, "load-0", [ev("Marker")])
        assert await before_marks(d, [("load", "load-0", 1000)], within=30) == []
    ids = Counter(x.event["event_id"] for x in got)
    assert len(ids) == 10_000 and max(ids.values()) == 1
    for s in streams:  # in version order per stream, no gap
        assert [x.version for x in got if x.stream_id == s] == list(range(1000))
    await _eventually(lambda: _lag(c, st, "load"), 0)


async def _lag(c: GaterClient, st: str, name: str) -> int:
    return (await c.get_subscription(st, name)).lag_events


# --- redelivery and parking ---------------------------------------------------------------------------


async def test_unacked_events_are_redelivered_then_parked_and_replayed(c: GaterClient, st: str) -> None:
    await c.append_events(st, "p", [ev("X", {"i": 0}), ev("X", {"i": 1})])
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(
            st,
            "stream",
            "p",
            "never-acks",
            "start",
            subject,
            ack_wait_ms=300,
            max_deliver=3,
            backoff_ms=[200, 300, 400],
        )
        got = await collect(d, 6, ack=False)
        attempts = sorted((x.version, x.attempt) for x in got)
        assert attempts == [(0, "1"), (0, "2"), (0, "3"), (1, "1"), (1, "2"), (1, "3")]
        await _eventually(lambda: _parked(c, st, "never-acks"), 2)
        await _eventually(lambda: _checkpoint(c, st, "never-acks"), 1)  # parked events no longer hold it back
        await c.append_events(st, "p", [ev("Marker")])
        assert await before_marks(d, [("never-acks", "p", 2)]) == []  # no fourth attempt

        task = asyncio.create_task(c.replay_parked(st, "never-acks"))
        replayed = await collect(d, 2)
        assert sorted(x.version for x in replayed) == [0, 1]
        assert {x.attempt for x in replayed} == {"replay"}
        assert await task == 2
        await _eventually(lambda: _parked(c, st, "never-acks"), 0)


async def _parked(c: GaterClient, st: str, name: str) -> int:
    return (await c.get_subscription(st, name)).parked


async def test_nak_asks_for_redelivery(c: GaterClient, st: str) -> None:
    await c.append_events(st, "n", [ev("X")])
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, "stream", "n", "naks", "start", subject, ack_wait_ms=5000, backoff_ms=[100])
        first = await collect(d, 1, ack=False)
        await first[0].nak()
        again = await collect(d, 1)
        assert (again[0].version, again[0].attempt) == (0, "2")


async def test_ack_event_through_the_api_moves_the_checkpoint_forward_only(c: GaterClient, st: str) -> None:
    for _ in range(3):  # three appends: the checkpoint moves per append
        await c.append_events(st, "k", [ev("X")])
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, "stream", "k", "api-acks", "start", subject)
        got = await collect(d, 3, ack=False)
        assert [x.version for x in got] == [0, 1, 2]
        await c.ack_event(st, "k", "api-acks", 0)
        await _eventually(lambda: _checkpoint(c, st, "api-acks"), 0)
        await c.ack_event(st, "k", "api-acks", 2)  # 1 still open: the checkpoint stays
        await _eventually(lambda: _lag(c, st, "api-acks"), 1)  # JetStream has the ack of 2: only 1 is open
        assert await _checkpoint(c, st, "api-acks") == 0
        await c.ack_event(st, "k", "api-acks", 1)
        await _eventually(lambda: _checkpoint(c, st, "api-acks"), 2)
        await c.ack_event(st, "k", "api-acks", 1)  # again: harmless, nothing moves back
        assert await _checkpoint(c, st, "api-acks") == 2


# --- competing subscribers, instances, restarts ------------------------------------------------------------


async def test_queue_group_subscribers_split_the_load_and_see_every_event(c: GaterClient, st: str) -> None:
    await c.append_events(st, "q", [ev("X", {"i": i}) for i in range(200)])
    subject = inbox()
    a, b = c.deliveries(subject, queue="workers"), c.deliveries(subject, queue="workers")
    async with a, b:
        await c.save_subscription(st, "stream", "q", "competing", "start", subject)
        seen: dict[str, list[int]] = {"a": [], "b": []}
        markers: dict[str, int] = {"a": 0, "b": 0}

        async def drain(name: str, d: Any) -> None:
            while True:
                x = await d.next(30.0)
                await x.ack()
                if x.version >= 200:
                    markers[name] += 1
                else:
                    seen[name].append(x.version)

        drains = [asyncio.create_task(drain("a", a)), asyncio.create_task(drain("b", b))]
        # markers (versions past 200), one at a time, each to one member, until both had one: the
        # driver delivers in log order, so whatever else it has for a member comes before
        for _ in range(50):
            if all(markers.values()):
                break
            before = sum(markers.values())
            await c.append_events(st, "q", [ev("Marker")])
            deadline = time.monotonic() + 10
            while sum(markers.values()) == before:
                assert time.monotonic() < deadline, "a marker was not delivered"
                await asyncio.sleep(0.01)
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
    assert all(markers.values()), markers
    assert sorted(seen["a"] + seen["b"]) == list(range(200))
    assert seen["a"] and seen["b"]


async def test_kill_and_restart_resumes_from_the_checkpoint_without_loss(sub_server: NatsServer, st: str) -> None:
    """A second instance takes over a killed instance's subscription; acked events are not
    sent again, unacked ones are; nothing is lost."""
    a = await start_services(["subscription"], _settings(sub_server.url))
    nc = await jetstream.connect(sub_server.url)
    c = GaterClient(nc, timeout=10)
    b: Running | None = None
    try:
        await c.append_events(st, "r", [ev("X", {"i": i}) for i in range(50)])
        subject = inbox()
        async with c.deliveries(subject) as d:
            await c.save_subscription(st, "stream", "r", "survivor", "start", subject, ack_wait_ms=10_000)
            first = await collect(d, 50)
            assert [x.version for x in first] == list(range(50))
            await _eventually(lambda: _checkpoint(c, st, "survivor"), 49)
            # kill every subscription instance that may hold it: ours and the module's
            module = [*_supervisors(a), *_module_supervisors]
            for sup in module:
                await sup.abandon()
            await a.nc.close()
            await c.append_events(st, "r", [ev("X", {"i": i}) for i in range(50, 80)])
            b = await start_services(["subscription"], _settings(sub_server.url))
            second = await collect(d, 30, within=20)
            assert [x.version for x in second] == list(range(50, 80))
            await c.append_events(st, "r", [ev("Marker")])
            assert await before_marks(d, [("survivor", "r", 80)], within=20) == []
    finally:
        for sup in _module_supervisors:
            await sup.start()
        if b is not None:
            await b.stop()
        await nc.drain()


def _supervisors(r: Running) -> list[Any]:
    return [x for x in r.resources if type(x).__name__ == "Supervisor"]


_module_supervisors: list[Any] = []


@pytest.fixture(autouse=True)
def _remember_module_supervisors(sub_services: Running) -> None:
    _module_supervisors[:] = _supervisors(sub_services)


async def test_two_instances_never_double_deliver(sub_server: NatsServer, c: GaterClient, st: str) -> None:
    extra = await start_services(["subscription"], _settings(sub_server.url))
    try:
        await c.append_events(st, "dd", [ev("X", {"i": i}) for i in range(100)])
        subject = inbox()
        async with c.deliveries(subject) as d:
            for i in range(4):
                await c.save_subscription(st, "stream", "dd", f"twice-{i}", "start", subject)
            got = await collect(d, 400)
            await c.append_events(st, "dd", [ev("Marker")])
            assert await before_marks(d, [(f"twice-{i}", "dd", 100) for i in range(4)]) == []
        per = Counter((x.subscription, x.version) for x in got)
        assert len(per) == 400 and max(per.values()) == 1
    finally:
        await extra.stop()


# --- the ops' contract ----------------------------------------------------------------------------------


async def test_save_list_get_remove_and_errors(c: GaterClient, st: str) -> None:
    await c.append_events(st, "x", [ev("X")])
    info = await c.save_subscription(st, "stream", "x", "contract", "start", "nobody.listens")
    assert (info.type, info.selector, info.name, info.subscriber, info.parked) == (
        "stream",
        "x",
        "contract",
        "nobody.listens",
        0,
    )
    with pytest.raises(AlreadyExistsError):
        await c.save_subscription(st, "stream", "x", "contract", "start", "nobody.listens")
    # same name, other selector: a different subscription
    await c.save_subscription(st, "stream", "y", "contract", "end", "nobody.listens")
    names = [(s.name, s.selector) for s in await c.get_subscriptions(st)]
    assert names == [("contract", "x"), ("contract", "y")]
    got = await c.get_subscription(st, "contract")
    assert got.selector == "x" and got.created_at > 0 and got.lag_events >= 0 and got.lag_seconds >= 0
    await c.remove_subscription(st, "stream", "x", "contract")
    await c.remove_subscription(st, "stream", "x", "contract")  # idempotent
    assert [s.selector for s in await c.get_subscriptions(st)] == ["y"]
    with pytest.raises(SubscriptionNotFoundError):
        await c.ack_event(st, "x", "no-such-subscription", 0)
    with pytest.raises(SubscriptionNotFoundError):
        await c.get_subscription(st, "no-such-subscription")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "stream", "selector": "", "name": "n", "subscriber": "a.b"},
        {"type": "stream", "selector": "s", "name": "n", "subscriber": "a.*"},
        {"type": "stream", "selector": "s", "name": "n", "subscriber": "a b"},
        {"type": "event_payload", "selector": "notanobject", "name": "n", "subscriber": "a.b"},
        {"type": "tags", "selector": [], "name": "n", "subscriber": "a.b"},
        {"type": "bogus", "selector": "s", "name": "n", "subscriber": "a.b"},
        {"type": "stream", "selector": "s", "name": "n", "subscriber": "a.b", "start_from": -3},
        {"type": "stream", "selector": "s", "name": "n", "subscriber": "a.b", "start_from": {"when": 1}},
        {
            "type": "event_type",
            "selector": "T",
            "name": "n",
            "subscriber": "a.b",
            "start_from": {"version": 1},
        },
        {"type": "stream", "selector": "s", "name": "n", "subscriber": "a.b", "max_deliver": 0},
    ],
)
async def test_bad_saves_are_invalid_requests_and_store_nothing(c: GaterClient, st: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        await c.request(st, "subscription", "save", body)
    assert await c.get_subscriptions(st) == []


async def test_events_for_a_subscriber_that_is_not_listening_are_not_acked(c: GaterClient, st: str) -> None:
    """Delivering to a subject nobody subscribes to makes the server answer the delivery's reply
    subject with a "503 no responders" status. That is not an ack: the events stay
    unacknowledged and reach the subscriber once it listens."""
    await c.append_events(st, "nobody", [ev("X", {"i": i}) for i in range(5)])
    subject = inbox()
    saved = await c.save_subscription(st, "stream", "nobody", "late", "start", subject, ack_wait_ms=1000)
    # at least one delivery with no subscriber, not taken as an ack: JetStream delivers it again
    js = c.nc.jetstream()
    await _until(
        lambda: js.consumer_info(Subjects().log_stream(st), f"sub-{saved.key}"), lambda ci: ci.num_redelivered >= 1
    )
    info = await c.get_subscription(st, "late")
    assert info.checkpoint is None and info.lag_events == 1, info
    async with c.deliveries(subject) as d:
        assert [x.version for x in await collect(d, 5, within=20)] == list(range(5))


async def test_subscription_survives_a_nats_server_restart(sub_server: NatsServer, c: GaterClient, st: str) -> None:
    """Definitions, consumers and checkpoints are JetStream state: after nats-server stops and
    starts again on the same data, delivery resumes where it was. (Last in this module: it
    restarts the module's server.)"""
    await c.append_events(st, "restart", [ev("X", {"i": i}) for i in range(10)])
    subject = inbox()
    async with c.deliveries(subject) as d:
        await c.save_subscription(st, "stream", "restart", "durable", "start", subject, ack_wait_ms=10_000)
        assert [x.version for x in await collect(d, 10)] == list(range(10))
        await _eventually(lambda: _checkpoint(c, st, "durable"), 9)
        await asyncio.to_thread(sub_server.stop)
        await asyncio.to_thread(sub_server.start)
        for _ in range(100):  # clients reconnect on their own
            try:
                await c.append_events(st, "restart", [ev("X", {"i": 10})])
                break
            except Exception:
                await asyncio.sleep(0.1)
        got = await collect(d, 1, within=20)
        assert [x.version for x in got] == [10]
        await c.append_events(st, "restart", [ev("Marker")])
        assert await before_marks(d, [("durable", "restart", 11)], within=20) == []
    assert (await c.get_subscription(st, "durable")).type == "stream"
