"""The channel service without a server: its pinned wire surface, the table and its overrides,
topic rules and matching, and the dispatcher's weighted draining and shedding rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from esdb_gater.services.channel import service
from esdb_gater.services.channel.dispatch import Dispatcher
from esdb_gater.services.channel.policy import ChannelTable
from esdb_gater.services.channel.store import topic_matches
from esdb_gater.shared.core.errors import NotFoundError, UnavailableError
from esdb_gater.shared.core.settings import ChannelOverride, ChannelsSettings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.models.channel import PublishRequest, SubscribeRequest
from esdb_gater.shared.runtime.memory import MemoryMonitor

PINNED = {
    "esdb.api._.channel.publish": ("PublishRequest", "PublishResponse"),
    "esdb.api._.channel.subscribe": ("SubscribeRequest", "SubscribeResponse"),
    "esdb.api._.channel.unsubscribe": ("UnsubscribeRequest", "OkResponse"),
    "esdb.api._.channel.history": ("HistoryRequest", "HistoryResponse"),
    "esdb.api._.channel.list": ("ChannelsRequest", "ChannelsResponse"),
}


def test_channel_service_subjects_are_pinned() -> None:
    s = Subjects()
    actual = {s.api("_", "channel", op.name): (op.request.__name__, op.response.__name__) for op in service.OPS}
    assert actual == PINNED
    assert all(op.scope == "global" and op.description for op in service.OPS)
    assert s.channel("events", "user.*") == "esdb.ch.events.user.*"
    assert Subjects("acme").channel_log("alerts", ">") == "acme.chlog.alerts.>"


def test_overrides_change_and_add_channels() -> None:
    table = ChannelTable(
        ChannelsSettings(
            capability_mode="disabled",
            overrides={
                "health": ChannelOverride(rate_limit=0, priority="low"),
                "events": ChannelOverride(hmac="required", capability_mode="required", durable=True),
                "billing": ChannelOverride(priority="critical"),
            },
        )
    )
    health, events, billing, alerts = (table.get(n) for n in ("health", "events", "billing", "alerts"))
    assert (health.rate_limit, health.priority, health.capability_mode) == (None, "low", "disabled")
    assert (events.hmac, events.capability_mode, events.durable, events.priority) == (
        "required",
        "required",
        True,
        "high",
    )
    assert (billing.priority, billing.durable, billing.hmac, billing.rate_limit) == ("critical", True, "optional", None)
    assert (alerts.hmac, alerts.durable, alerts.capability_mode) == ("required", True, "disabled")
    assert len(table.channels) == 11
    with pytest.raises(NotFoundError):
        table.get("nope")
    with pytest.raises(ValidationError):
        ChannelsSettings(overrides={"Bad Name": ChannelOverride()})


@pytest.mark.parametrize("topic", ["a", "user.created", "a-b_c:d=e+f@g~h", ".".join(["t"] * 16), "x" * 64])
def test_good_topics(topic: str) -> None:
    assert PublishRequest(channel="events", topic=topic, message=1).topic == topic


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "ä", "x" * 65, ".".join(["t"] * 17)])
def test_bad_publish_topics(topic: str) -> None:
    with pytest.raises(ValidationError):
        PublishRequest(channel="events", topic=topic, message=1)


@pytest.mark.parametrize("topic", ["*", ">", "a.*", "a.>", "*.b.>", "a.*.c"])
def test_subscription_patterns(topic: str) -> None:
    assert SubscribeRequest(channel="events", topic=topic, deliver_to="_INBOX.x").topic == topic


@pytest.mark.parametrize("topic", ["a.>.b", ">.a", "a*", "a.b*"])
def test_bad_patterns(topic: str) -> None:
    with pytest.raises(ValidationError):
        SubscribeRequest(channel="events", topic=topic, deliver_to="_INBOX.x")


@pytest.mark.parametrize("deliver_to", ["_INBOX.*", "_INBOX.>", "a..b", "with space", ""])
def test_deliver_to_must_be_literal(deliver_to: str) -> None:
    with pytest.raises(ValidationError):
        SubscribeRequest(channel="events", topic="a", deliver_to=deliver_to)


def test_topic_matching() -> None:
    def m(p: str, t: str) -> bool:
        return topic_matches(tuple(p.split(".")), t.split("."))

    assert m("a.b", "a.b") and not m("a.b", "a.c") and not m("a", "a.b") and not m("a.b", "a")
    assert m("a.*", "a.x") and not m("a.*", "a.x.y") and not m("a.*", "a")
    assert m("a.>", "a.x") and m("a.>", "a.x.y") and not m("a.>", "a")
    assert m(">", "z") and m("*.b.>", "a.b.c.d") and not m("*.b.>", "a.c.d")


# --- dispatcher --------------------------------------------------------------------------------


def _dispatcher(memory: MemoryMonitor | None = None, **kw: Any) -> Dispatcher:
    args: dict[str, Any] = {
        "workers": 1,
        "max_queue": 100,
        "shed_at": {"low": 0.25, "normal": 0.5, "high": 1.0},
        "weights": {"critical": 8, "high": 4, "normal": 2, "low": 1},
        "max_wait_s": 5.0,
        "memory": memory,
    }
    args.update(kw)
    return Dispatcher(**args)


async def test_weighted_round_robin_order() -> None:
    d = _dispatcher(weights={"critical": 3, "high": 2, "normal": 1, "low": 1})
    order: list[str] = []
    d.pause()
    await d.start()
    jobs = []
    for p in ("low", "normal", "high", "critical"):
        for i in range(4):

            async def work(p: str = p, i: int = i) -> str:
                order.append(p[0])
                return f"{p}{i}"

            jobs.append(asyncio.ensure_future(d.submit(p, work)))
    await asyncio.sleep(0)
    assert d.queued() == 16
    d.resume()
    results = await asyncio.wait_for(asyncio.gather(*jobs), 5)
    await d.stop()
    assert results[:4] == ["low0", "low1", "low2", "low3"]  # each publisher gets its own result
    # rounds of 3 critical, 2 high, 1 normal, 1 low until queues empty
    assert "".join(order) == "ccchhnl" + "chhnl" + "nl" + "nl"


async def test_exceptions_reach_the_publisher_and_stop_fails_leftovers() -> None:
    d = _dispatcher()
    await d.start()

    async def boom() -> None:
        raise UnavailableError("jetstream down")

    with pytest.raises(UnavailableError, match="jetstream down"):
        await asyncio.wait_for(d.submit("high", boom), 5)
    d.pause()
    left = asyncio.ensure_future(d.submit("low", boom))
    await asyncio.sleep(0)
    d.max_wait_s = 0.01
    await d.stop()
    with pytest.raises(UnavailableError):
        await asyncio.wait_for(left, 5)


async def test_queue_timeout() -> None:
    clock = _Clock()
    d = _dispatcher(max_wait_s=0.05, clock=clock)
    d.pause()
    await d.start()

    async def ok() -> int:
        return 1

    job = asyncio.ensure_future(d.submit("normal", ok))
    await asyncio.sleep(0)  # queued
    assert d.queued() == 1
    clock.now += 0.1  # it waited longer than max_wait_s
    d.resume()
    with pytest.raises(UnavailableError) as exc:
        await asyncio.wait_for(job, 5)
    assert exc.value.details["reason"] == "queue_timeout"
    await d.stop()


def test_shedding_rules() -> None:
    crit = _dispatcher(MemoryMonitor(limit_bytes=1, sample_interval_s=3600))
    for p in ("low", "normal"):
        with pytest.raises(UnavailableError) as exc:
            crit.admit(p, "ch")
        assert exc.value.details["reason"] == "memory_pressure"
    crit.admit("high", "ch")
    crit.admit("critical", "ch")
    elevated = _dispatcher(MemoryMonitor(limit_bytes=1 << 60, elevated=1e-15, critical=0.99, sample_interval_s=3600))
    with pytest.raises(UnavailableError):
        elevated.admit("low", "ch")
    elevated.admit("normal", "ch")
    assert crit.shed == {"critical": 0, "high": 0, "normal": 1, "low": 1}


class _Clock:
    """A fake monotonic clock: the queue is "behind" only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_is_not_shed_but_a_stalled_queue_is() -> None:
    clock = _Clock()
    d = _dispatcher(clock=clock)  # max_wait 5 s: low sheds after 1.25 s, normal 2.5 s, high 5 s
    d.pause()  # a stuck worker: nothing is delivered
    await d.start()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 1

    burst = []
    for _ in range(90):  # a burst far past the old rule's threshold (low at 25 of max_queue 100)
        d.admit("low", "ch")
        burst.append(asyncio.ensure_future(d.submit("low", work)))
    await asyncio.sleep(0)
    assert d.queued() == 90 and d.shed["low"] == 0
    clock.now += 1.0  # behind by 1 s: still under every threshold
    d.admit("low", "ch")
    clock.now += 0.5  # behind by 1.5 s > 1.25 s: low is shed, normal and high are not
    with pytest.raises(UnavailableError) as exc:
        d.admit("low", "ch")
    assert exc.value.details["reason"] == "overloaded" and exc.value.details["priority"] == "low"
    assert exc.value.details["behind_s"] == 1.5 and exc.value.details["shed_after_s"] == 1.25
    d.admit("normal", "ch")
    normal = asyncio.ensure_future(d.submit("normal", work))
    await asyncio.sleep(0)
    clock.now += 2.0  # the normal job waits 2 s: normal not yet, but the low backlog (3.5 s) is not its business
    d.admit("normal", "ch")
    clock.now += 0.6  # ... 2.6 s > 2.5 s: normal is shed; high has nothing queued ahead of it
    with pytest.raises(UnavailableError):
        d.admit("normal", "ch")
    d.admit("high", "ch")
    d.admit("critical", "ch")
    clock.now += 100  # critical is never shed
    d.admit("critical", "ch")
    assert d.shed == {"critical": 0, "high": 0, "normal": 1, "low": 1}
    clock.now -= 100 + 4.1  # back within max_wait: the backlog drains once the worker moves
    gate.set()
    d.resume()
    assert sum(await asyncio.wait_for(asyncio.gather(*burst, normal), 10)) == 91
    d.admit("low", "ch")  # drained: accepted again
    await d.stop()


def test_the_queue_length_cap_protects_memory() -> None:
    d = _dispatcher(max_queue=3, clock=_Clock())
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):
            d._queues["normal"].append(_job(loop, d))
        with pytest.raises(UnavailableError) as exc:
            d.admit("low", "ch")  # nobody waited long, but the cap is reached
        assert exc.value.details["queued"] == 3 and exc.value.details["max_queue"] == 3
        with pytest.raises(UnavailableError):
            d.admit("high", "ch")
        d.admit("critical", "ch")
    finally:
        loop.close()


def _job(loop: asyncio.AbstractEventLoop, d: Dispatcher) -> Any:
    from esdb_gater.services.channel.dispatch import _Job

    async def work() -> None:
        return None

    return _Job(work, loop.create_future(), "normal", d.clock())
