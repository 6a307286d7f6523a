"""The channel service over the wire against a real nats-server (SPEC.md §9, docs/api/channel.md):
delivery subjects and wildcards, no cross-channel leak, queue groups, the rate limits (shared
across instances), HMAC required vs optional, forged/expired/future/replayed messages,
capability tokens for every reason, subscribe-with-token, priorities under a backlog, shedding
under overload and memory pressure, and durable channels surviving a subscriber's absence."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.services import start_services
from esdb_gater.services.channel.dispatch import Dispatcher
from esdb_gater.services.channel.store import ChannelStore
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import (
    GatewayError,
    InvalidRequestError,
    InvalidSignatureError,
    InvalidTimestampError,
    MessageExpiredError,
    MissingTimestampError,
    NotFoundError,
    RateLimitedError,
    SignatureRequiredError,
    UnauthorizedError,
    UnavailableError,
)
from esdb_gater.shared.core.settings import ChannelOverride, ChannelsSettings, MemorySettings, Settings
from esdb_gater.shared.log.jetstream import flush_barrier
from esdb_gater.shared.models.channel import Priority
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security import capability as cap
from esdb_gater.shared.security import signing as security
from esdb_gater.shared.security.capability import Identity
from tests.conftest import Wire

SECRET = "test-secret-" + secrets.token_hex(8)
SPEC_TABLE = {
    "alerts": ("critical", None, "required", True),
    "security": ("critical", None, "required", True),
    "events": ("high", None, "optional", False),
    "health": ("high", 100, "optional", False),
    "system": ("normal", None, "optional", False),
    "metrics": ("normal", 10000, "optional", False),
    "audit": ("normal", None, "optional", False),
    "lifecycle": ("normal", None, "optional", False),
    "logging": ("low", 1000, "optional", False),
    "diagnostics": ("low", 100, "optional", False),
}


def _topic() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def _collect(sub: Any, n: int, within: float = 5.0) -> list[Msg]:
    out: list[Msg] = []
    deadline = time.monotonic() + within
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            out.append(await sub.next_msg(timeout=left))
        except Exception:
            break
    return out


async def _eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def instances(
    nats_url: str, n: int = 1, memory: MemorySettings | None = None, **channels: Any
) -> AsyncIterator[tuple[str, list[Running]]]:
    """``n`` channel-service instances of their own (a fresh subject prefix) on the session's server."""
    prefix = "c" + uuid.uuid4().hex[:8]
    settings = Settings(
        nats_url=nats_url,
        subject_prefix=prefix,
        channels=ChannelsSettings(hmac_secret=SECRET, **channels),
        memory=memory or MemorySettings(),
    )
    running: list[Running] = []
    try:
        for _ in range(n):
            running.append(await start_services(["channel"], settings))
        yield prefix, running
    finally:
        for r in running:
            await r.stop()


def _part(running: Running, kind: type[Any]) -> Any:
    return next(r for r in running.resources if isinstance(r, kind))


# --- the session's service (default settings) ---------------------------------------------------


async def test_channel_table_is_the_spec_table(client: GaterClient) -> None:
    table = {c.name: (c.priority, c.rate_limit, c.hmac, c.durable) for c in await client.channels()}
    assert table == SPEC_TABLE


async def test_publish_delivers_channel_topic_message(client: GaterClient, nc: Client, wire: Wire) -> None:
    t = _topic()
    sub = await nc.subscribe(f"esdb.ch.events.{t}.created")
    await flush_barrier(nc)
    reply = await wire.call(
        "_", "publish", {"channel": "events", "topic": f"{t}.created", "message": {"id": 1}}, service="channel"
    )
    assert reply.ok() == {"ok": True, "seq": None}
    [msg] = await _collect(sub, 1)
    assert json.loads(msg.data) == {"channel": "events", "topic": f"{t}.created", "message": {"id": 1}}
    ack = await client.publish("events", f"{t}.created", ["any", "json", 1.5, None])
    assert ack.ok and ack.seq is None
    [msg] = await _collect(sub, 1)
    assert json.loads(msg.data)["message"] == ["any", "json", 1.5, None]


async def test_wildcard_topic_subscriptions(client: GaterClient) -> None:
    t = _topic()
    one = await client.subscribe("events", f"{t}.*")
    all_ = await client.subscribe("events", f"{t}.>")
    mid = await client.subscribe("events", f"{t}.*.done")
    for topic in (f"{t}.a", f"{t}.b", f"{t}.a.done", f"{t}.a.b.c"):
        await client.publish("events", topic, {"topic": topic})
    got_one = [(await one.next(2)).topic for _ in range(2)]
    got_all = [(await all_.next(2)).topic for _ in range(4)]
    got_mid = (await mid.next(2)).topic
    assert got_one == [f"{t}.a", f"{t}.b"]
    assert got_all == [f"{t}.a", f"{t}.b", f"{t}.a.done", f"{t}.a.b.c"]
    assert got_mid == f"{t}.a.done"
    # nothing else for "one": a later marker is the next thing it gets (deliveries keep their order)
    await client.publish("events", f"{t}.z", "marker")
    assert (await one.next(2)).topic == f"{t}.z"
    for s in (one, all_, mid):
        await client.unsubscribe(s)


async def test_no_cross_channel_leak(client: GaterClient, nc: Client) -> None:
    t = _topic()
    events = await client.subscribe("events", t)
    system = await client.subscribe("system", t)
    everything = await nc.subscribe("esdb.ch.*." + t)
    await flush_barrier(nc)
    await client.publish("system", t, "for system")
    await client.publish("audit", t, "for audit")
    got = await system.next(2)
    assert (got.channel, got.message, got.subject) == ("system", "for system", f"esdb.ch.system.{t}")
    # nothing else for either: later markers are the next thing each gets (deliveries keep their order)
    await client.publish("events", t, "marker")
    await client.publish("system", t, "marker")
    assert (await events.next(2)).message == "marker"
    assert (await system.next(2)).message == "marker"
    seen = sorted(json.loads(m.data)["channel"] for m in await _collect(everything, 2))
    assert seen == ["audit", "system"]
    await everything.unsubscribe()  # the markers are still queued there
    for s in (events, system):
        await s.close()


async def test_queue_group_load_balancing(client: GaterClient) -> None:
    t = _topic()
    workers = [await client.subscribe("events", f"{t}.>", queue="workers") for _ in range(2)]
    watcher = await client.subscribe("events", f"{t}.>")
    await asyncio.gather(*(client.publish("events", f"{t}.job", {"n": i}) for i in range(40)))
    counts, markers = [0, 0], [0, 0]

    async def drain(k: int) -> None:
        while True:
            got = await workers[k].next(30)
            if got.message == "marker":
                markers[k] += 1
            else:
                counts[k] += 1

    drains = [asyncio.create_task(drain(k)) for k in range(2)]
    # markers, one at a time, each to one worker, until both had one: deliveries keep their
    # order, so every job a worker gets comes before its marker
    for _ in range(50):
        if all(markers):
            break
        before = sum(markers)
        await client.publish("events", f"{t}.job", "marker")
        await _eventually(lambda: sum(markers) > before)  # noqa: B023 (awaited in this iteration)
    for task in drains:
        task.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    assert all(markers), markers
    assert sum(counts) == 40 and all(c > 0 for c in counts), counts
    seen = {(await watcher.next(2)).message["n"] for _ in range(40)}
    assert seen == set(range(40))
    for s in (*workers, watcher):  # the markers are still queued in some
        await s.close()


def _pin_second(monkeypatch: pytest.MonkeyPatch, *running: Running) -> None:
    """The rate limits of these instances count in one second that does not end (their clock
    stands still): what a burst gets does not depend on where a wall-clock second turns."""
    now = float(int(time.time())) + 0.5
    stores = [r for each in running for r in each.resources if isinstance(r, ChannelStore)]
    assert stores
    for store in stores:
        monkeypatch.setattr(store, "clock", lambda: now)


async def _burst(publish: Callable[[int], Awaitable[Any]], n: int) -> tuple[int, int]:
    """``n`` concurrent publishes: (ok, rate_limited)."""
    results = await asyncio.gather(*(publish(i) for i in range(n)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, RateLimitedError):
            raise r
    limited = sum(isinstance(r, RateLimitedError) for r in results)
    return n - limited, limited


async def test_health_rate_limit_150_quick_publishes(
    client: GaterClient, wire: Wire, services: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pin_second(monkeypatch, services)
    t = _topic()
    assert await _burst(lambda i: client.publish("health", t, {"i": i}), 150) == (100, 50)
    # the limit is per topic: another topic is not affected; and the error is retryable, 429
    await client.publish("health", t + "-other", "fine")
    body = {"channel": "health", "topic": t + "-w", "message": 1}
    replies = await asyncio.gather(*(wire.call("_", "publish", body, service="channel") for _ in range(110)))
    errors = [r for r in replies if r.is_error]
    assert len(errors) == 10
    for r in errors:
        details = r.error("rate_limited")
        assert r.headers["Nats-Service-Error-Code"] == "429" and r.body["error"]["retryable"] is True
        assert details == {"channel": "health", "topic": t + "-w", "limit": 100, "per": "second"}


async def test_each_rate_limited_channel_shared_across_instances(
    nats_url: str, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = {"health": 7, "metrics": 5, "logging": 4, "diagnostics": 3}
    overrides = {name: ChannelOverride(rate_limit=n) for name, n in limits.items()}
    async with instances(nats_url, n=2, overrides=overrides) as (prefix, running):
        _pin_second(monkeypatch, *running)
        client = GaterClient(nc, prefix=prefix)
        t = _topic()

        async def burst(i: int) -> Any:
            name = list(limits)[i % 4]
            return await client.publish(name, t, {"i": i})

        results = await asyncio.gather(*(burst(i) for i in range(80)), return_exceptions=True)
        for k, (name, limit) in enumerate(limits.items()):  # two instances, one limit per channel and topic
            mine = results[k::4]
            assert sum(not isinstance(r, BaseException) for r in mine) == limit, (name, mine)
            assert all(isinstance(r, RateLimitedError) for r in mine if isinstance(r, BaseException))
        # an unlimited channel takes a burst
        acks = await asyncio.gather(*(client.publish("events", t, i) for i in range(300)))
        assert all(a.ok for a in acks)


# --- HMAC --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def secured(nats_url: str) -> AsyncIterator[tuple[str, list[Running], Identity]]:
    """Two instances sharing a prefix, a known HMAC secret, a trusted root identity; audit
    requires capability tokens, events keeps the default (optional)."""
    root = Identity.generate()
    async with instances(
        nats_url,
        n=2,
        trusted_issuers=[root.did],
        overrides={"audit": ChannelOverride(capability_mode="required")},
    ) as (prefix, running):
        yield prefix, running, root


async def test_hmac_required_vs_optional(secured: Any, nc: Client) -> None:
    prefix, _, _ = secured
    client = GaterClient(nc, prefix=prefix)
    t = _topic()
    with pytest.raises(SignatureRequiredError):
        await client.publish("alerts", t, {"text": "unsigned"})
    with pytest.raises(SignatureRequiredError):
        await client.publish("security", t, "not even an object")
    assert (await client.publish("alerts", t, {"text": "signed", "t": t}, secret=SECRET)).seq is not None
    assert (await client.publish("events", t, {"text": "unsigned"})).ok  # optional: unsigned is fine
    assert (await client.publish("events", t, {"text": "signed", "t": t, "x": 2}, secret=SECRET)).ok  # signed too
    with pytest.raises(InvalidSignatureError):  # but a signature that is there must verify
        await client.publish("events", t, {"text": "x", "signed_at": int(time.time()), "signature": "bad_sig"})


async def test_forged_expired_future_and_replayed_messages(secured: Any, nc: Client, wire: Wire) -> None:
    prefix, running, _ = secured
    client = GaterClient(nc, prefix=prefix)
    t = _topic()
    now = int(time.time())
    cases: list[tuple[dict[str, Any], type[GatewayError], str | None]] = [
        (security.sign({"m": 1}, "wrong-secret"), InvalidSignatureError, "mismatch"),
        ({**security.sign({"m": 1}, SECRET), "m": 2}, InvalidSignatureError, "mismatch"),
        (security.sign({"m": 1}, SECRET, now=now - 301), MessageExpiredError, None),
        (security.sign({"m": 1}, SECRET, now=now + 60), InvalidTimestampError, "in_future"),
        ({"m": 1, "signature": "x"}, MissingTimestampError, None),
        ({"m": 1, "signature": "x", "signed_at": str(now)}, InvalidTimestampError, "not_integer"),
    ]
    for message, error, reason in cases:
        with pytest.raises(error) as exc:
            await client.publish("alerts", t, message)
        if reason:
            assert exc.value.details["reason"] == reason
    # the wire form of one of them
    r = await wire.raw(
        f"{prefix}.api._.channel.publish",
        json.dumps({"channel": "alerts", "topic": t, "message": cases[2][0]}).encode(),
    )
    assert r.error("message_expired")["ttl_s"] == 300
    assert r.headers["Nats-Service-Error-Code"] == "401"
    # replays: rejected whichever instance takes them
    signed = [security.sign({"n": i, "t": t}, SECRET) for i in range(10)]
    for m in signed:
        await client.publish("alerts", t, m)
    for m in signed:
        with pytest.raises(InvalidSignatureError) as exc:
            await client.publish("alerts", t, m)
        assert exc.value.details["reason"] == "replayed"
    other_store: ChannelStore = _part(running[1], ChannelStore)
    assert not await other_store.first_seen(signed[0]["signature"], time.time() + 300)
    # a rate-limited or rejected message did not burn its signature
    fresh = security.sign({"n": "fresh", "t": t}, SECRET)
    with pytest.raises(UnauthorizedError):
        await client.publish("audit", t, fresh)  # audit requires a capability token
    await client.publish("events", t, fresh)


# --- capability tokens ----------------------------------------------------------------------------


def _tok(issuer: Identity, audience: Identity, grants: list[tuple[str, str]], **kw: Any) -> str:
    return cap.encode(cap.sign(cap.create(issuer, audience, grants, **kw), issuer))


async def test_capability_allow_and_deny_for_each_reason(secured: Any, nc: Client) -> None:
    prefix, _, root = secured
    client = GaterClient(nc, prefix=prefix)
    alice, bob = Identity.generate(), Identity.generate()
    t = _topic()
    audit = f"esdb://default/channel/audit/{t}"
    good = _tok(root, alice, [(f"esdb://default/channel/audit/{t}.*", "channel/publish")])
    assert (await client.publish("audit", f"{t}.x", {"ok": 1}, good)).ok

    now = int(time.time())
    head, body, sig = good.split(".")
    denied = {
        "capability_required": None,
        "expired": _tok(root, alice, [(audit, "channel/publish")], now=now - 1000, ttl_s=60),
        "not_yet_valid": _tok(root, alice, [(audit, "channel/publish")], nbf=now + 3600),
        "invalid_signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "parse_error": "invalid_token",
        "untrusted_issuer": _tok(alice, alice, [(audit, "channel/publish")]),
        "insufficient_permissions": _tok(root, alice, [(audit, "channel/subscribe")]),
    }
    for reason, token in denied.items():
        with pytest.raises(UnauthorizedError) as exc:
            await client.publish("audit", t, {"x": 1}, token)
        assert exc.value.details["reason"] == reason, (reason, exc.value.details)
    with pytest.raises(UnauthorizedError) as exc:  # a grant for another topic
        await client.publish("audit", "elsewhere", {"x": 1}, good)
    assert exc.value.details["reason"] == "insufficient_permissions"

    # delegation: a subset works, an over-broad one is refused, a stolen link is a mismatch
    parent = _tok(root, alice, [(f"esdb://default/channel/audit/{t}.*", "channel/*")])
    child = cap.encode(cap.sign(cap.delegate(parent, bob, [(f"{audit}.bob", "channel/publish")]), alice))
    assert (await client.publish("audit", f"{t}.bob", {"by": "bob"}, child)).ok
    broad = replace(cap.create(alice, bob, [("esdb://default/channel/*", "*")]), prf=(parent,))
    with pytest.raises(UnauthorizedError) as exc:
        await client.publish("audit", "anything", {"x": 1}, cap.encode(cap.sign(broad, alice)))
    assert exc.value.details["reason"] == "insufficient_permissions"
    stolen = replace(cap.create(bob, bob, [(f"{audit}.x", "channel/publish")]), prf=(parent,))
    with pytest.raises(UnauthorizedError) as exc:
        await client.publish("audit", f"{t}.x", {"x": 1}, cap.encode(cap.sign(stolen, bob)))
    assert exc.value.details["reason"] == "audience_mismatch"

    # optional mode (events): no token is fine, a bad one is not
    assert (await client.publish("events", t, 1)).ok
    with pytest.raises(UnauthorizedError) as exc:
        await client.publish("events", t, 1, "invalid_token")
    assert exc.value.details["reason"] == "parse_error"


async def test_subscribe_with_token_delivers_to_the_holders_inbox(secured: Any, nc: Client) -> None:
    prefix, _, root = secured
    client = GaterClient(nc, prefix=prefix)
    guest = Identity.generate()
    t = _topic()
    can_sub = _tok(root, guest, [(f"esdb://default/channel/audit/{t}.*", "channel/subscribe")])
    can_pub = _tok(root, guest, [(f"esdb://default/channel/audit/{t}.*", "channel/publish")])
    sub = await client.subscribe("audit", f"{t}.*", can_sub)
    assert sub.forward_id and sub.expires_at
    assert sub.expires_at <= (cap.decode(can_sub).exp * 1000)  # forwarding ends with the token
    await client.publish("audit", f"{t}.one", {"n": 1}, can_pub)
    got = await sub.next(3)
    assert (got.channel, got.topic, got.message) == ("audit", f"{t}.one", {"n": 1})
    await client.unsubscribe(sub)
    # after unsubscribe nothing more is forwarded (checked on a fresh inbox watching the same topic)
    probe = await client.subscribe("audit", f"{t}.*", can_sub)
    await client.publish("audit", f"{t}.two", {"n": 2}, can_pub)
    assert (await probe.next(3)).message == {"n": 2}
    await probe.close()
    # required mode: no token, or one without channel/subscribe, is refused
    with pytest.raises(UnauthorizedError) as exc:
        await client.subscribe("audit", f"{t}.*", "")
    assert exc.value.details["reason"] == "capability_required"
    with pytest.raises(UnauthorizedError) as exc:
        await client.subscribe("audit", f"{t}.*", can_pub)
    assert exc.value.details["reason"] == "insufficient_permissions"
    # the service only delivers to inboxes
    with pytest.raises(InvalidRequestError) as ir:
        await client.request(
            "_",
            "channel",
            "subscribe",
            {"channel": "events", "topic": t, "deliver_to": f"{prefix}.log.x.e.y", "capability_token": can_sub},
        )
    assert ir.value.details["field"] == "deliver_to"
    # unsubscribing twice (or an unknown id) is fine
    await client.request("_", "channel", "unsubscribe", {"id": "0" * 32})


async def test_critical_messages_survive_a_subscribers_brief_absence(secured: Any, nc: Client) -> None:
    prefix, _, _ = secured
    client = GaterClient(nc, prefix=prefix)
    t = _topic()
    sub = await client.subscribe("alerts", f"{t}.>")
    first = await client.publish("alerts", f"{t}.disk", {"n": 0, "t": t}, secret=SECRET)
    got = await sub.next(3)
    assert got.seq == first.seq and got.message["n"] == 0
    last_seen = sub.last_seq
    await client.unsubscribe(sub)  # the subscriber goes away ...
    missed = [await client.publish("alerts", f"{t}.disk", {"n": i, "t": t}, secret=SECRET) for i in (1, 2, 3)]
    await client.publish("alerts", "someone-else", {"n": 99, "t": t}, secret=SECRET)  # other topics are not ours
    back = await client.subscribe("alerts", f"{t}.>", after_seq=last_seen)  # ... and comes back
    await client.publish("alerts", f"{t}.cpu", {"n": 4, "t": t}, secret=SECRET)
    got_back = [await back.next(3) for _ in range(4)]
    assert [m.message["n"] for m in got_back] == [1, 2, 3, 4]
    assert [m.seq for m in got_back[:3]] == [a.seq for a in missed]
    # no copy of those (history and live overlap): a later message is the next one
    await client.publish("alerts", f"{t}.cpu", {"n": 5, "t": t}, secret=SECRET)
    assert (await back.next(3)).message["n"] == 5
    await back.close()
    page = await client.channel_history("alerts", f"{t}.>", after_seq=0, limit=2)
    assert [m.message["n"] for m in page.messages] == [0, 1] and page.more
    assert page.messages[0].published_at > 0
    rest = await client.channel_history("alerts", f"{t}.>", after_seq=page.last_seq)
    assert [m.message["n"] for m in rest.messages] == [2, 3, 4, 5] and not rest.more


# --- priorities ----------------------------------------------------------------------------------


async def test_priority_ordering_under_a_backlog(nats_url: str, nc: Client) -> None:
    async with instances(nats_url, workers=1, max_queue=10_000) as (prefix, [running]):
        client = GaterClient(nc, prefix=prefix)
        dispatcher: Dispatcher = _part(running, Dispatcher)
        t = _topic()
        order: list[str] = []

        async def on_msg(msg: Msg) -> None:
            order.append(msg.subject.split(".")[2])

        await nc.subscribe(f"{prefix}.ch.*.{t}", cb=on_msg)
        await flush_barrier(nc)
        dispatcher.pause()
        n = 12
        tasks = []
        # sent lowest priority first: first come, first served would deliver them first
        for channel in ("logging", "system", "events", "alerts"):
            for i in range(n):
                msg = security.sign({"i": i}, SECRET) if channel == "alerts" else {"i": i}
                tasks.append(asyncio.create_task(client.publish(channel, t, msg)))

            def queued(prio: Priority = _PRIO[channel]) -> bool:
                return dispatcher.depth()[prio] == n

            await _eventually(queued)
        assert dispatcher.queued() == 4 * n
        dispatcher.resume()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await _eventually(lambda: len(order) == 4 * n)
        rank = {c: sum(i for i, x in enumerate(order) if x == c) / n for c in _PRIO}
        assert rank["alerts"] < rank["events"] < rank["system"] < rank["logging"], order
        assert order[:8] == ["alerts"] * 8  # critical weight 8 goes first
        assert order[-1] == "logging"
        assert order.index("logging") < len(order) - n  # weighted, not strict: low is not starved


_PRIO: dict[str, Priority] = {"alerts": "critical", "events": "high", "system": "normal", "logging": "low"}


async def test_a_stalled_queue_sheds_low_priority_first(nats_url: str, nc: Client) -> None:
    """Shedding follows how far behind the queue is (docs/adr/0020-shedding-on-real-overload.md):
    the deliveries are stalled (paused workers) and a fake clock says how long the jobs waited."""
    async with instances(nats_url) as (prefix, [running]):
        client = GaterClient(nc, prefix=prefix)
        dispatcher: Dispatcher = _part(running, Dispatcher)
        offset = [0.0]
        dispatcher.clock = lambda: time.monotonic() + offset[0]
        t = _topic()
        dispatcher.pause()
        queued = [asyncio.create_task(client.publish("system", t, i)) for i in range(20)]
        await _eventually(lambda: dispatcher.queued() == 20)
        assert dispatcher.shed["normal"] == 0  # a backlog alone sheds nothing
        offset[0] = 2.0  # the normal jobs waited 2 s: low (1.25 s) is shed, normal (2.5 s) is not yet
        with pytest.raises(UnavailableError) as exc:
            await client.publish("logging", t, "shed me")
        assert exc.value.details["reason"] == "overloaded" and exc.value.details["priority"] == "low"
        assert exc.value.details["shed_after_s"] == 1.25 and exc.value.details["behind_s"] >= 2.0
        assert exc.value.retryable
        queued += [asyncio.create_task(client.publish("system", t, i)) for i in range(2)]
        queued += [asyncio.create_task(client.publish("events", t, i)) for i in range(2)]  # high waits
        await _eventually(lambda: dispatcher.queued() == 24)
        offset[0] = 3.0  # 3 s > 2.5 s: normal is shed; high has waited nothing
        with pytest.raises(UnavailableError) as exc:
            await client.publish("system", t, "shed me too")
        assert exc.value.details["priority"] == "normal"
        offset[0] = 60.0  # everything is far behind: high is shed; critical is never shed
        with pytest.raises(UnavailableError):
            await client.publish("health", t, "behind")
        queued.append(asyncio.create_task(client.publish("alerts", t, security.sign({"c": 1}, SECRET))))
        await _eventually(lambda: dispatcher.queued() == 25)
        offset[0] = 0.0  # the clock back: the jobs are young again and the stall ends
        dispatcher.resume()
        assert all(a.ok for a in await asyncio.wait_for(asyncio.gather(*queued), 10))
        assert (await client.publish("logging", t, "drained")).ok
        assert dispatcher.shed["low"] == 1 and dispatcher.shed["normal"] == 1 and dispatcher.shed["critical"] == 0


async def test_memory_pressure_sheds_low_then_normal(nats_url: str, nc: Client) -> None:
    t = _topic()
    critical = MemorySettings(limit_bytes=1)  # used/limit >> 0.85
    async with instances(nats_url, memory=critical) as (prefix, _):
        client = GaterClient(nc, prefix=prefix)
        for channel in ("logging", "diagnostics", "system", "metrics"):
            with pytest.raises(UnavailableError) as exc:
                await client.publish(channel, t, 1)
            assert exc.value.details["reason"] == "memory_pressure"
            assert exc.value.details["memory_level"] == "critical"
        assert (await client.publish("events", t, 1)).ok
        assert (await client.publish("health", t, 1)).ok
        assert (await client.publish("alerts", t, security.sign({"a": 1}, SECRET))).ok
    elevated = MemorySettings(limit_bytes=1 << 60, elevated=1e-15, critical=0.99)
    async with instances(nats_url, memory=elevated) as (prefix, _):
        client = GaterClient(nc, prefix=prefix)
        with pytest.raises(UnavailableError) as exc:
            await client.publish("logging", t, 1)
        assert exc.value.details.get("memory_level") == "elevated", exc.value
        assert (await client.publish("system", t, 1)).ok


# --- bad input ------------------------------------------------------------------------------------


async def test_bad_requests_get_structured_errors(wire: Wire, client: GaterClient) -> None:
    def pub(body: Any) -> Awaitable[Any]:
        return wire.call("_", "publish", body, service="channel")

    assert (await pub({"channel": "nope", "topic": "a", "message": 1})).error("not_found")["channel"] == "nope"
    for topic in ("", "a..b", "a.*", ">", "a b", "x" * 300, ".".join(["a"] * 17), "ä"):
        d = (await pub({"channel": "events", "topic": topic, "message": 1})).error("invalid_request")
        assert d["field"] == "topic", topic
    assert (await pub({"channel": "Events", "topic": "a", "message": 1})).error("invalid_request")["field"] == "channel"
    assert (await pub({"channel": "events", "topic": "a"})).error("invalid_request")["field"] == "message"
    assert (await pub({"channel": "events", "topic": "a", "message": 1, "extra": 1})).error("invalid_request")
    assert (await pub([1, 2])).error("invalid_request")
    big = "x" * (1024 * 1024 + 10)
    assert (await pub({"channel": "events", "topic": "a", "message": big})).error("payload_too_large")
    r = await wire.call("_", "history", {"channel": "events"}, service="channel")
    assert r.error("invalid_request")["field"] == "channel"
    r = await wire.call("_", "unsubscribe", {"id": "not-hex"}, service="channel")
    assert r.error("invalid_request")["field"] == "id"
    r = await wire.call(
        "_", "subscribe", {"channel": "events", "topic": "a", "deliver_to": "_INBOX.*"}, service="channel"
    )
    assert r.error("invalid_request")["field"] == "deliver_to"
    r = await wire.call(
        "_",
        "publish",
        {"channel": "events", "topic": "a", "message": {"b": b"\x00"}},
        service="channel",
        codec="msgpack",
    )
    assert r.ok() == {"ok": True, "seq": None}  # binary travels as base64 in the JSON delivery
    with pytest.raises(NotFoundError):
        await client.publish("nope", "a", 1)


async def test_bench_channel_rows_run(nats_url: str, nc: Client) -> None:
    """bench/channel.py's rows, briefly: every op delivered, none failed."""
    from esdb_gater.bench.channel import channel_vs_raw

    async with instances(nats_url) as (prefix, _):
        rows = await channel_vs_raw(nc, duration=0.2, concurrency=4, secret=SECRET, prefix=prefix)
    assert set(rows) == {"channel_hmac", "channel_plain", "raw_request_reply"}
    for name, sample in rows.items():
        assert sample.ops > 0 and sample.errors == 0, (name, sample)
