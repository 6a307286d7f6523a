"""Issue 10, "replies and deliveries go only where they belong" (docs/adr/0013-reply-and-target-subjects.md).

Each attack of the issue replayed over the wire against the session's services:

* a request whose reply subject is not under an allowed inbox prefix is not processed: nothing
  is published there (the log of another store, a channel, its durable history, another
  application's subject), and the drop shows in ``$SRV.STATS`` (the event these tests await
  before looking for what must not have happened);
* a ``subscriber`` or channel ``deliver_to`` in the gateway's own or the system's subject space,
  or with wildcards, is refused with ``invalid_request``; a forwarding stored before the check
  delivers nothing;
* a message someone published raw into a stream's log subject does not make the stream answer
  ``internal``: reads skip it, version/exists come from the last commit, appends still work.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.services import start_services
from esdb_gater.shared.core.settings import SecuritySettings, Settings
from esdb_gater.shared.log.jetstream import flush_barrier
from esdb_gater.shared.runtime.runner import Running
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(90)


async def _stats(nc: Client, running: Running, service: str, endpoint: str) -> tuple[int, str]:
    """(num_errors, last_error) of one endpoint of the session's instance, over $SRV.STATS."""
    svc = next(s.service for s in running.services if s.service._name == service)
    msg = await nc.request(f"$SRV.STATS.{service}.{svc.id}", b"", timeout=5)
    ep = next(e for e in json.loads(msg.data)["endpoints"] if e["name"] == endpoint)
    return int(ep["num_errors"]), str(ep.get("last_error") or "")


async def _await_drop(nc: Client, running: Running, service: str, endpoint: str, before: int) -> None:
    """Wait (bounded) until the endpoint counted one more error, a refused reply subject."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        errors, last = await _stats(nc, running, service, endpoint)
        if errors > before:
            assert last == "403:reply_subject", last
            return
        assert loop.time() < deadline, "the request with a foreign reply subject was never dropped"
        await asyncio.sleep(0.02)


class _Catch:
    """Messages arriving on some subjects (core NATS subscriptions)."""

    def __init__(self) -> None:
        self.got: list[Msg] = []

    async def cb(self, msg: Msg) -> None:
        self.got.append(msg)


async def _log_count(nc: Client, store: str) -> int:
    msg = await nc.request(f"$JS.API.STREAM.INFO.esdb-log-{store}", b"", timeout=5)
    return int(json.loads(msg.data)["state"]["messages"])


# --- (a) reply subjects ----------------------------------------------------------------------------


async def test_reply_into_a_foreign_log_appends_nothing(wire: Wire, nc: Client, services: Running, store: str) -> None:
    victim = f"acct-{uuid.uuid4().hex[:6]}"
    opened = {"stream_id": victim, "events": [{"event_type": "Opened", "data": {}}]}
    (await wire.call(store, "append", opened)).ok()
    before_msgs = await _log_count(nc, store)
    before_errors, _ = await _stats(nc, services, "esdb-stream", "version")

    await nc.publish(
        f"esdb.api.{store}.stream.version",
        json.dumps({"stream_id": victim}).encode(),
        reply=f"esdb.log.{store}.e.{victim}",
    )
    await _await_drop(nc, services, "esdb-stream", "version", before_errors)
    await flush_barrier(nc)

    assert await _log_count(nc, store) == before_msgs  # nothing was appended to the victim's log
    assert (await wire.call(store, "version", {"stream_id": victim})).ok() == {"version": 0}
    events = (await wire.call(store, "read", {"stream_id": victim})).ok()["events"]
    assert [e["event_type"] for e in events] == ["Opened"]
    paid = {"stream_id": victim, "expected_version": 0, "events": [{"event_type": "Paid", "data": {}}]}
    appended = (await wire.call(store, "append", paid)).ok()
    assert appended["version"] == 1


@pytest.mark.parametrize("target", ["esdb.ch.alerts.fire", "esdb.chlog.alerts.fire", "payments.execute"])
async def test_channel_list_reply_to_a_foreign_subject_publishes_nothing(
    wire: Wire, nc: Client, services: Running, target: str
) -> None:
    catch = _Catch()
    sub = await nc.subscribe(target, cb=catch.cb)
    await flush_barrier(nc)
    before_errors, _ = await _stats(nc, services, "esdb-channel", "list")

    await nc.publish("esdb.api._.channel.list", b"{}", reply=target)
    await _await_drop(nc, services, "esdb-channel", "list", before_errors)
    # the same request with an ordinary inbox still works (and its reply comes after anything
    # the dropped one could have sent on the same connection)
    channels = (await wire.raw("esdb.api._.channel.list", b"{}")).ok()["channels"]
    assert {c["name"] for c in channels} >= {"alerts", "events"}
    await flush_barrier(nc)
    await sub.unsubscribe()
    assert catch.got == []


async def test_reply_to_another_application_gets_nothing_from_the_stream_service(
    wire: Wire, nc: Client, services: Running, store: str
) -> None:
    catch = _Catch()
    sub = await nc.subscribe("payments.execute", cb=catch.cb)
    await flush_barrier(nc)
    before_errors, _ = await _stats(nc, services, "esdb-stream", "append")
    await nc.publish(
        f"esdb.api.{store}.stream.append",
        json.dumps({"stream_id": "s", "events": [{"event_type": "E", "data": {}}]}).encode(),
        reply="payments.execute",
    )
    await _await_drop(nc, services, "esdb-stream", "append", before_errors)
    await flush_barrier(nc)
    await sub.unsubscribe()
    assert catch.got == []
    # not processed at all: the append did not happen
    assert (await wire.call(store, "version", {"stream_id": "s"})).ok() == {"version": -1}


async def test_discovery_reply_into_a_log_is_dropped(wire: Wire, nc: Client, services: Running, store: str) -> None:
    """``$SRV.INFO`` is answered by nats.micro, not our adapter; the same rule holds."""
    (await wire.call(store, "append", {"stream_id": "s", "events": [{"event_type": "E", "data": {}}]})).ok()
    target = f"esdb.log.{store}.e.s"
    catch = _Catch()
    sub = await nc.subscribe(target, cb=catch.cb)
    await flush_barrier(nc)
    before = await _log_count(nc, store)
    svc = next(s.service for s in services.services if s.service._name == "esdb-stream")
    subject = f"$SRV.INFO.esdb-stream.{svc.id}"
    await nc.publish(subject, b"", reply=target)
    # same subscription, handled in order: once this is answered, the one before was handled
    info = json.loads((await nc.request(subject, b"", timeout=5)).data)
    assert info["name"] == "esdb-stream"
    await flush_barrier(nc)
    await sub.unsubscribe()
    assert catch.got == []
    assert await _log_count(nc, store) == before
    assert await _versions(wire, store, "s") == [0]


async def _active_driver(client: Any, nc: Client, store: str, name: str) -> str:
    """The control subject of a subscription, once a driver holds it (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        info = await client.get_subscription(store, name)
        if info.active:
            break
        assert loop.time() < deadline, "no driver took the subscription"
        await asyncio.sleep(0.05)
    ctl = f"esdb.api.{store}.subscription.ctl.{info.key}"
    # the driver answers its forwarded-ack subject once it is subscribed to its control subjects
    while True:
        try:
            await nc.request(f"{ctl}.ack", b'{"stream_id":"none","event_number":0}', timeout=0.5)
            return ctl
        except Exception:
            assert loop.time() < deadline, "the driver does not answer on its control subjects"


async def test_subscription_control_reply_to_a_foreign_subject_is_dropped(
    client: Any, nc: Client, services: Running, store: str
) -> None:
    """The driver's control subjects (native acks) answer only inbox replies too."""
    await client.save_subscription(store, "stream", "$all", "ctl", subscriber=f"_INBOX.{uuid.uuid4().hex}")
    ctl = await _active_driver(client, nc, store, "ctl")
    catch = _Catch()
    sub = await nc.subscribe("payments.execute", cb=catch.cb)
    await flush_barrier(nc)
    await nc.publish(f"{ctl}.ack", b'{"stream_id":"none","event_number":0}', reply="payments.execute")
    # the driver handles its control messages one at a time, in order: this answer comes after
    # anything it could have sent for the one before
    await nc.request(f"{ctl}.ack", b'{"stream_id":"none","event_number":0}', timeout=5)
    await flush_barrier(nc)
    await sub.unsubscribe()
    assert catch.got == []


async def test_a_guessed_native_ack_subject_acks_nothing(
    client: Any, wire: Wire, nc: Client, services: Running, store: str
) -> None:
    """Native acks are under the store's API space, which any caller of the store may publish
    to: a delivery's reply subject carries the driver's random token, so a subject guessed from
    the sequence and version (or with another token) acks nothing; the real one does."""
    await _append(wire, store, "s", 1)
    inbox = f"_INBOX.{uuid.uuid4().hex}"
    got: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=got.put)
    await flush_barrier(nc)
    try:
        await client.save_subscription(store, "stream", "s", "guess", subscriber=inbox)
        delivery = await asyncio.wait_for(got.get(), 15)
        assert delivery.reply
        ctl, rest = delivery.reply.split(".n.", 1)
        token, seq, version = rest.split(".")
        for forged in (f"{ctl}.n.{seq}.{version}", f"{ctl}.n.{'0' * len(token)}.{seq}.{version}"):
            await nc.publish(forged, b"+ACK")
        await nc.request(f"{ctl}.ack", b'{"stream_id":"none","event_number":0}', timeout=5)  # in order: after them
        assert (await client.get_subscription(store, "guess")).checkpoint is None
        await delivery.respond(b"+ACK")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (await client.get_subscription(store, "guess")).checkpoint is None:
            assert loop.time() < deadline, "the real ack did not move the checkpoint"
            await asyncio.sleep(0.05)
    finally:
        await sub.unsubscribe()


# --- (b) client-named targets -----------------------------------------------------------------------

BAD_SUBSCRIBERS = [
    ("esdb.log.{store}.e.acct-2", "reserved"),
    ("esdb.api.x", "reserved"),
    ("esdb.ch.alerts.fire", "reserved"),
    ("esdb.chlog.alerts.fire", "reserved"),
    ("esdb.ix.{store}.id.x", "reserved"),
    ("esdb.dlq.{store}.x", "reserved"),
    ("$JS.API.STREAM.DELETE.esdb-log-{store}", "reserved"),
    ("$KV.esdb-subscriptions.x", "reserved"),
    ("$SYS.REQ.SERVER.PING", "reserved"),
    ("$SRV.PING", "reserved"),
]


@pytest.mark.parametrize(("subject", "reason"), BAD_SUBSCRIBERS)
async def test_subscription_subscriber_in_reserved_space_is_refused(
    wire: Wire, store: str, subject: str, reason: str
) -> None:
    body = {"type": "stream", "selector": "$all", "name": "evil", "subscriber": subject.format(store=store)}
    details = (await wire.call(store, "save", body, service="subscription")).error("invalid_request")
    assert details["field"] == "subscriber"
    assert details["reason"] == reason
    listed = await wire.call(store, "list", {}, service="subscription")
    if not listed.is_error:  # store_not_found is fine too: nothing was made
        assert listed.ok()["subscriptions"] == []


@pytest.mark.parametrize("subject", ["$JS.API.>", "_INBOX.*", "a.>.b", "a..b", "a b", "ünï.x"])
async def test_subscription_subscriber_wildcard_or_malformed_is_refused(wire: Wire, store: str, subject: str) -> None:
    body = {"type": "stream", "selector": "$all", "name": "evil", "subscriber": subject}
    details = (await wire.call(store, "save", body, service="subscription")).error("invalid_request")
    assert "subscriber" in details["field"]


@pytest.mark.parametrize(
    "subject",
    ["esdb.log.x.e.y", "esdb.ch.alerts.fire", "esdb.chlog.alerts.fire", "esdb.api._.channel.publish", "$JS.API.INFO"],
)
async def test_channel_deliver_to_in_reserved_space_is_refused(wire: Wire, subject: str) -> None:
    body = {"channel": "events", "topic": "x", "deliver_to": subject}
    details = (await wire.raw("esdb.api._.channel.subscribe", json.dumps(body).encode())).error("invalid_request")
    assert details == {"field": "deliver_to", "reason": "reserved"}


async def test_channel_deliver_to_wildcard_is_refused(wire: Wire) -> None:
    body = {"channel": "events", "topic": "x", "deliver_to": "_INBOX.*"}
    details = (await wire.raw("esdb.api._.channel.subscribe", json.dumps(body).encode())).error("invalid_request")
    assert details["field"] == "deliver_to"


async def test_a_stored_forwarding_to_a_reserved_subject_delivers_nothing(nc: Client, services: Running) -> None:
    """A forwarding written before the check (here: straight into the bucket) is ignored."""
    kv = await nc.jetstream().key_value("esdb-chsubs")
    topic = f"t{uuid.uuid4().hex[:8]}"
    bad_target = f"esdb.ch.alerts.{topic}"
    good_target = f"_INBOX.{uuid.uuid4().hex}"
    bad = _Catch()
    good: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_good(msg: Msg) -> None:
        await good.put(msg)

    subs = [await nc.subscribe(bad_target, cb=bad.cb), await nc.subscribe(good_target, cb=on_good)]
    await flush_barrier(nc)
    expires = time.time() + 60
    ids = [secrets.token_hex(16), secrets.token_hex(16)]
    for fid, target in zip(ids, (bad_target, good_target), strict=True):
        fwd = {"id": fid, "channel": "events", "topic": topic, "deliver_to": target, "expires_at": expires}
        await kv.put(fid, json.dumps(fwd).encode())
    try:
        # the watch applies the two puts in order; once the good one forwards, the bad one was seen
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        got = None
        while got is None:
            body = {"channel": "events", "topic": topic, "message": {"n": 1}}
            reply = await nc.request("esdb.api._.channel.publish", json.dumps(body).encode(), timeout=5)
            assert "error" not in json.loads(reply.data), reply.data
            try:
                got = await asyncio.wait_for(good.get(), 0.5)
            except TimeoutError:
                assert loop.time() < deadline, "the good forwarding never delivered"
        await flush_barrier(nc)
        assert bad.got == []
    finally:
        for s in subs:
            await s.unsubscribe()
        for fid in ids:
            await kv.delete(fid)


@pytest.fixture
async def narrowed(nats_url: str) -> AsyncIterator[tuple[Running, str]]:
    """Stream and subscription services with an allow-list for one store (own prefixes, so they
    share no queue group or bucket with the session's services)."""
    store = "allow" + uuid.uuid4().hex[:8]
    prefix = "sec" + uuid.uuid4().hex[:6]
    settings = Settings(
        nats_url=nats_url,
        auto_create_stores=True,
        subject_prefix=prefix,
        service_name_prefix=prefix,
        security=SecuritySettings(target_allow={store: ["_INBOX.orders."], "_": ["_INBOX.chan."]}),
    )
    running = await start_services(["stream", "subscription", "channel"], settings)
    try:
        yield running, f"{prefix}|{store}"
    finally:
        await running.stop()


async def test_target_allow_list_narrows_targets(narrowed: tuple[Running, str], nc: Client) -> None:
    _, key = narrowed
    prefix, store = key.split("|")
    w = Wire(nc, prefix)
    body = {"type": "stream", "selector": "$all", "name": "a", "subscriber": "_INBOX.billing.x"}
    details = (await w.call(store, "save", body, service="subscription", wait=10)).error("invalid_request")
    assert details == {"field": "subscriber", "reason": "not_allowed"}
    body["subscriber"] = "_INBOX.orders.x"
    assert (await w.call(store, "save", body, service="subscription", wait=10)).ok()["subscriber"] == "_INBOX.orders.x"
    # the session prefix is not reserved for these services, their own is
    body = {"type": "stream", "selector": "$all", "name": "b", "subscriber": f"{prefix}.log.{store}.e.x"}
    details = (await w.call(store, "save", body, service="subscription", wait=10)).error("invalid_request")
    assert details["reason"] == "reserved"
    # channel forwardings: the store-less ops use the allow-list of the store token "_"
    ch = {"channel": "events", "topic": "x", "deliver_to": "_INBOX.other.x"}
    details = (await w.raw(f"{prefix}.api._.channel.subscribe", json.dumps(ch).encode())).error("invalid_request")
    assert details == {"field": "deliver_to", "reason": "not_allowed"}


# --- (c) a foreign message in the log ----------------------------------------------------------------


async def _raw_into_log(
    nc: Client, store: str, stream_id: str, data: bytes, headers: dict[str, str] | None = None
) -> int:
    """A JetStream publish straight into the log (what someone with JetStream rights can do)."""
    msg = await nc.request(f"esdb.log.{store}.e.{stream_id}", data, timeout=5, headers=headers)
    ack = json.loads(msg.data)
    assert "error" not in ack, ack
    return int(ack["seq"])


async def _versions(wire: Wire, store: str, stream_id: str, **read: Any) -> list[int]:
    events = (await wire.call(store, "read", {"stream_id": stream_id, **read})).ok()["events"]
    return [int(e["version"]) for e in events]


BACKWARD: dict[str, Any] = {"direction": "backward", "start_version": -1}


async def _append(wire: Wire, store: str, stream_id: str, n: int, expected: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_id": stream_id, "events": [{"event_type": "E", "data": {"i": i}} for i in range(n)]}
    if expected is not None:
        body["expected_version"] = expected
    return (await wire.call(store, "append", body)).ok()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"a card number 4111 1111 1111 1111", None),  # the reproduction: no headers at all
        (b"\x91\x80", {"Esdb-Version": "x", "Esdb-Count": "1"}),  # bad headers
        (b"not msgpack", {"Esdb-Version": "5", "Esdb-Count": "1"}),  # commit headers, body not events
    ],
    ids=["no-headers", "bad-headers", "bad-body"],
)
async def test_foreign_message_in_the_log_keeps_the_stream_readable_and_appendable(
    wire: Wire, nc: Client, store: str, stream_id: str, data: bytes, headers: dict[str, str] | None
) -> None:
    await _append(wire, store, stream_id, 2)
    await _raw_into_log(nc, store, stream_id, data, headers)

    assert (await wire.call(store, "version", {"stream_id": stream_id})).ok() == {"version": 1}
    assert (await wire.call(store, "exists", {"stream_id": stream_id})).ok() == {"exists": True}
    assert await _versions(wire, store, stream_id) == [0, 1]
    assert await _versions(wire, store, stream_id, **BACKWARD) == [1, 0]
    assert await _versions(wire, store, stream_id, start_version=1) == [1]
    # the next append expects the subject's real last sequence and gets the next version
    r = await _append(wire, store, stream_id, 1, expected=1)
    assert r["version"] == 2
    assert await _versions(wire, store, stream_id) == [0, 1, 2]
    assert await _versions(wire, store, stream_id, start_version=2) == [2]
    now_us = time.time_ns() // 1000 + 10_000_000
    assert (await wire.call(store, "version_at", {"stream_id": stream_id, "timestamp": now_us})).ok() == {"version": 2}
    until = (await wire.call(store, "read_until", {"stream_id": stream_id, "timestamp": now_us})).ok()["events"]
    assert [e["version"] for e in until] == [0, 1, 2]
    # and a conflict is still a conflict, not internal
    stale = {"stream_id": stream_id, "expected_version": 0, "events": [{"event_type": "E", "data": {}}]}
    (await wire.call(store, "append", stale)).error("wrong_expected_version")


async def test_a_stream_holding_only_foreign_messages_is_empty(wire: Wire, nc: Client, store: str) -> None:
    await _append(wire, store, "other", 1)  # makes the store
    await _raw_into_log(nc, store, "only", b"junk")
    assert (await wire.call(store, "version", {"stream_id": "only"})).ok() == {"version": -1}
    assert (await wire.call(store, "exists", {"stream_id": "only"})).ok() == {"exists": False}
    (await wire.call(store, "read", {"stream_id": "only"})).error("stream_not_found")
    (await wire.call(store, "read", {"stream_id": "only", **BACKWARD})).error("stream_not_found")
    r = await _append(wire, store, "only", 1, expected=-1)  # no_stream
    assert r["version"] == 0
    assert await _versions(wire, store, "only") == [0]


async def test_a_long_run_of_foreign_messages_after_the_last_commit(wire: Wire, nc: Client, store: str) -> None:
    await _append(wire, store, "s", 3)
    for i in range(40):  # more than the backward walk takes one at a time
        await _raw_into_log(nc, store, "s", f"junk {i}".encode())
    assert (await wire.call(store, "version", {"stream_id": "s"})).ok() == {"version": 2}
    assert (await _append(wire, store, "s", 1, expected=2))["version"] == 3
    assert await _versions(wire, store, "s", **BACKWARD, count=2) == [3, 2]


async def test_foreign_message_on_an_undecodable_subject_keeps_stream_list_working(
    wire: Wire, nc: Client, store: str
) -> None:
    await _append(wire, store, "a", 1)
    for token in ("%ZZ", "%FF", "%41"):  # bad escape, invalid UTF-8, not canonical
        await _raw_into_log(nc, store, token, b"junk")
    assert (await wire.call(store, "list", {})).ok()["streams"] == ["a"]


async def test_subscription_delivers_past_a_foreign_message(client: Any, wire: Wire, nc: Client, store: str) -> None:
    await _append(wire, store, "s", 1)
    await _raw_into_log(nc, store, "s", b"junk")
    await _raw_into_log(nc, store, "%ZZ", b"junk")
    await _append(wire, store, "s", 1)
    inbox = f"_INBOX.{uuid.uuid4().hex}"
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg)
        await msg.respond(b"+ACK")

    sub = await nc.subscribe(inbox, cb=on_msg)
    await flush_barrier(nc)
    try:
        await client.save_subscription(store, "stream", "$all", "past", subscriber=inbox)
        versions = []
        for _ in range(2):
            m = await asyncio.wait_for(got.get(), 15)
            versions.append(json.loads(m.data)["version"])
        assert versions == [0, 1]
    finally:
        await sub.unsubscribe()


async def test_scavenging_a_stream_with_a_foreign_head_is_refused_and_purges_nothing(
    wire: Wire, nc: Client, store: str
) -> None:
    await _append(wire, store, "s", 1)
    await _append(wire, store, "s", 1)
    await _raw_into_log(nc, store, "s", b"junk")
    before = await _log_count(nc, store)
    body = {"stream_id": "s", "keep_versions": 0, "require_snapshot": False}
    for op in ("dry_run", "scavenge"):
        details = (await wire.call(store, op, body, service="scavenger", wait=10)).error("invalid_request")
        assert details["reason"] == "corrupt_entry"
    assert await _log_count(nc, store) == before
    assert await _versions(wire, store, "s") == [0, 1]


async def test_subscription_checkpoint_past_a_foreign_message(client: Any, wire: Wire, nc: Client, store: str) -> None:
    """The ack floor may land on a corrupt entry (the driver acks it at once); the checkpoint is
    the version of the last commit before it, not ``internal``."""
    await _append(wire, store, "s", 1)
    await _append(wire, store, "s", 1)
    foreign = await _raw_into_log(nc, store, "s", b"junk")
    inbox = f"_INBOX.{uuid.uuid4().hex}"

    async def on_msg(msg: Msg) -> None:
        await msg.respond(b"+ACK")

    sub = await nc.subscribe(inbox, cb=on_msg)
    await flush_barrier(nc)
    try:
        await client.save_subscription(store, "stream", "s", "cp", subscriber=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            info = (await wire.call(store, "get", {"name": "cp"}, service="subscription")).ok()
            if info["checkpoint_position"] == foreign:
                break
            assert loop.time() < deadline, info
            await asyncio.sleep(0.05)
        assert info["checkpoint"] == 1
        assert info["lag_events"] == 0
    finally:
        await sub.unsubscribe()
