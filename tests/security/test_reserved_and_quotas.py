"""Reserved streams and bounded resources (issue 10 item 4, docs/adr/0016-reserved-streams-and-quotas.md),
replayed over the wire against a nats-server of this module's own, with every service on it,
stores created on first use (as under ``gater up``) and small quotas.

* A client cannot write ``$``-streams (``$link:<name>``): ``invalid_request`` reason ``reserved``,
  and the services-only subject the link service uses refuses a caller without the service
  credential. Links still work end to end.
* A forged ``source_position`` in ``$link:<name>`` cannot stop a link: the driver resumes from its
  own checkpoint (KV).
* Reads never create a store: 20 reads of random store names (every read op of every service)
  and a typo'd store name leave JetStream's streams and consumers as they were.
* Per-store quotas (subscriptions, links, schemas, channel forwardings, auto-created stores)
  answer ``quota_exceeded`` (429, not retryable, details quota/limit/store).
* Per-store state in memory (the schema registries' watches) is dropped when idle.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from esdb_gater.services.causation.indexer import IndexerPool
from esdb_gater.services.link.driver import derived_event_id
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import AlreadyExistsError, QuotaExceededError
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security.authz import service_headers
from esdb_gater.shared.tooling.natsserver import NatsServer
from esdb_gater.shared.upcasting.registry import SchemaRegistry
from tests.conftest import Wire
from tests.security.conftest import connection, own_server, own_services

AUTO_CREATED = 12
IDLE_S = 1.0
QUOTAS = QuotaSettings(
    subscriptions_per_store=2,
    links_per_store=2,
    schemas_per_store=2,
    forwardings_per_store=2,
    auto_created_stores=AUTO_CREATED,
    idle_evict_s=IDLE_S,
)


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_server("quotas") as srv:
        yield srv


@pytest.fixture(scope="module")
async def running(server: NatsServer) -> AsyncIterator[Running]:
    settings = Settings(nats_url=server.url, auto_create_stores=True, lease_ttl_s=1.0, quotas=QUOTAS)
    async with own_services(settings) as r:
        yield r


@pytest.fixture
async def conn(running: Running, server: NatsServer) -> AsyncIterator[Client]:
    async with connection(server.url) as nc:
        yield nc


@pytest.fixture
def c(conn: Client) -> GaterClient:
    return GaterClient(conn)


@pytest.fixture
def w(conn: Client) -> Wire:
    return Wire(conn)


def _name(kind: str = "q") -> str:
    return kind + uuid.uuid4().hex[:10]


async def _js(nc: Client, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=5)
    reply: dict[str, Any] = json.loads(msg.data)
    assert "error" not in reply, reply
    return reply


async def _jetstream_state(nc: Client) -> tuple[int, int, list[str]]:
    """(streams, consumers, stream names) of the account."""
    info = await _js(nc, "$JS.API.INFO")
    names: list[str] = []
    offset = 0
    while True:
        page = await _js(nc, "$JS.API.STREAM.NAMES", {"offset": offset})
        got = page.get("streams") or []
        names.extend(got)
        offset += len(got)
        if not got or offset >= int(page.get("total", 0)):
            break
    return int(info["streams"]), int(info["consumers"]), sorted(names)


async def eventually(probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], within: float = 15.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if check(value):
            return value
        assert loop.time() < deadline, f"condition not met within {within}s; last value {value!r}"
        await asyncio.sleep(0.05)


# --- reads never create a store (run first: nothing else writes meanwhile) ----------------------

READS: list[tuple[str, str, dict[str, Any]]] = [
    ("stream", "version", {"stream_id": "s"}),
    ("stream", "exists", {"stream_id": "s"}),
    ("stream", "read", {"stream_id": "s"}),
    ("stream", "forward", {"stream_id": "s"}),
    ("stream", "backward", {"stream_id": "s"}),
    ("stream", "list", {}),
    ("stream", "version_at", {"stream_id": "s", "timestamp": 1}),
    ("stream", "read_until", {"stream_id": "s", "timestamp": 1}),
    ("stream", "delete", {"stream_id": "s"}),
    ("store", "info", {}),
    ("snapshot", "read", {"source_uuid": "a", "stream_uuid": "b"}),
    ("snapshot", "list", {"source_uuid": "a", "stream_uuid": "b"}),
    ("snapshot", "delete", {"source_uuid": "a", "stream_uuid": "b", "version": 1}),
    ("schema", "list", {}),
    ("schema", "get", {"event_type": "T"}),
    ("subscription", "list", {}),
    ("subscription", "get", {"name": "n"}),
    ("link", "list", {}),
    ("link", "get", {"name": "n"}),
    ("causation", "effects", {"event_id": "e"}),
    ("scavenger", "policy_list", {}),
]


async def test_reads_of_random_store_names_create_no_stream_and_no_consumer(
    w: Wire, c: GaterClient, conn: Client, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = _name("empty")  # made explicitly, never written: the causation indexer leaves it alone
    await c.create_store(empty)
    before = await _jetstream_state(conn)
    stores = [_name("rnd") for _ in range(20)]
    for store in stores:
        assert (await w.call(store, "version", {"stream_id": "s"})).ok() == {"version": -1}
        assert (await w.call(store, "exists", {"stream_id": "s"})).ok() == {"exists": False}
        (await w.call(store, "read", {"stream_id": "s"})).error("stream_not_found")
        assert (await w.call(store, "list", {})).ok()["streams"] == []
        (await w.call(store, "info", {}, service="store")).error("store_not_found")
        for service, op, body in READS:
            r = await w.call(store, op, body, service=service)
            missing = ("stream_not_found", "store_not_found", "not_found", "subscription_not_found")
            assert not r.is_error or r.body["error"]["code"] in missing, (service, op, r.body)
    # the causation indexers look for stores every 2 s: wait for one whole round of each pool,
    # begun after the reads, to (not) react
    pools = [r for r in running.resources if isinstance(r, IndexerPool)]
    assert pools
    rounds = [0] * len(pools)
    for k, pool in enumerate(pools):

        async def counted(k: int = k, reconcile: Callable[[], Awaitable[None]] = pool.reconcile) -> None:
            await reconcile()
            rounds[k] += 1

        monkeypatch.setattr(pool, "reconcile", counted)
        pool.poke()
    await eventually(lambda: asyncio.sleep(0, min(rounds)), lambda n: n >= 1)
    after = await _jetstream_state(conn)
    assert after == before
    assert not [n for n in after[2] if any(s in n for s in stores)]
    assert (await _js(conn, f"$JS.API.CONSUMER.NAMES.esdb-log-{empty}")).get("consumers") in (None, [])


async def test_a_typo_in_a_store_name_creates_nothing(c: GaterClient, w: Wire, conn: Client) -> None:
    store = _name("demo")
    typo = store[1] + store[0] + store[2:]  # "edmo…"
    await c.append_events(store, "orders-1", [{"event_type": "Placed", "data": {}}])
    before = await _jetstream_state(conn)
    assert await c.get_version(typo, "orders-1") == -1
    assert await c.stream_exists(typo, "orders-1") is False
    (await w.call(typo, "read", {"stream_id": "orders-1"})).error("stream_not_found")
    assert (await w.call(typo, "list", {})).ok()["streams"] == []
    assert (await _jetstream_state(conn)) == before
    assert not [n for n in before[2] if typo in n]


# --- reserved streams -------------------------------------------------------------------------


async def test_a_client_cannot_write_reserved_streams(w: Wire, c: GaterClient) -> None:
    store = _name()
    await c.append_events(store, "src", [{"event_type": "A", "data": {}}])
    for stream_id in ("$link:x", "$anything", "$"):
        for op, body in (
            ("append", {"stream_id": stream_id, "expected_version": -2, "events": [{"event_type": "X", "data": {}}]}),
            ("delete", {"stream_id": stream_id}),
        ):
            for codec in ("json", "msgpack"):
                details = (await w.call(store, op, body, codec=codec)).error("invalid_request")
                assert details["field"] == "stream_id" and details["reason"] == "reserved", details
    # reads stay open
    assert (await w.call(store, "version", {"stream_id": "$link:x"})).ok() == {"version": -1}
    # the services-only subject refuses a caller without the service credential, in every mode
    internal: dict[str, Any] = {"stream_id": "$link:x", "expected_version": -2, "events": [{"event_type": "X"}]}
    r = await w.raw(f"esdb.internal.{store}.stream.append", json.dumps(internal).encode())
    assert r.error("unauthorized").get("reason") == "insufficient_permissions", r.body
    assert await c.get_version(store, "$link:x") == -1


async def test_a_link_still_writes_its_stream(c: GaterClient) -> None:
    store = _name()
    await c.create_link(store, {"name": "copy", "source": {"type": "stream", "stream_id": "orders"}})
    await c.start_link(store, "copy")
    await c.append_events(store, "orders", [{"event_type": "Placed", "data": {"n": 1}}])
    got = await eventually(lambda: _derived(c, store, "copy"), lambda evs: len(evs) == 1)
    assert got[0].data == {"n": 1}
    await c.delete_link(store, "copy", delete_stream=True)  # through the services-only subject too
    assert await c.get_version(store, "$link:copy") == -1


async def _derived(c: GaterClient, store: str, name: str) -> list[Any]:
    if not await c.stream_exists(store, f"$link:{name}"):
        return []
    return list(await c.stream_forward(store, f"$link:{name}", 0, 10_000))


async def test_a_forged_source_position_cannot_stop_a_link(c: GaterClient, running: Running, conn: Client) -> None:
    """Before: an event appended to ``$link:<name>`` with a huge ``source_position`` made the
    driver skip every later source event while ``link.info`` said running, lag 0. Clients can no
    longer append there at all; here the forged event is written with the services' own
    credential (what a stream written before this change, or a compromised service, holds), and
    the link still copies every later source event, also after a restart."""
    store = _name()
    await c.create_link(store, {"name": "watch", "source": {"type": "stream", "stream_id": "orders"}})
    await c.start_link(store, "watch")
    await c.append_events(store, "orders", [{"event_type": "Placed", "data": {"n": 0}}])
    await eventually(lambda: _derived(c, store, "watch"), lambda evs: len(evs) == 1)

    forged = {
        "event_id": derived_event_id("watch", "nope"),
        "event_type": "Placed",
        "data": {"forged": True},
        "metadata": {"source_stream": "orders", "source_position": 10**15, "source_version": 10**12},
    }
    forged["metadata"]["source_event_id"] = "nope"  # type: ignore[index]
    headers = {"Content-Type": "application/msgpack", **service_headers(running.nc)}
    body = {"stream_id": "$link:watch", "expected_version": -2, "events": [forged]}
    msg = await conn.request(
        f"esdb.internal.{store}.stream.append", msgpack.packb(body, use_bin_type=True), timeout=5, headers=headers
    )
    assert "Nats-Service-Error-Code" not in (msg.headers or {}), msgpack.unpackb(msg.data)

    await c.append_events(store, "orders", [{"event_type": "Placed", "data": {"n": 1}}])
    await c.append_events(store, "orders", [{"event_type": "Placed", "data": {"n": 2}}])
    evs = await eventually(lambda: _derived(c, store, "watch"), lambda evs: len(evs) == 4)
    assert [e.data for e in evs] == [{"n": 0}, {"forged": True}, {"n": 1}, {"n": 2}]

    # a restart resumes from the link's own checkpoint, not from the forged event
    await c.stop_link(store, "watch")
    await c.start_link(store, "watch")
    await c.append_events(store, "orders", [{"event_type": "Placed", "data": {"n": 3}}])
    evs = await eventually(lambda: _derived(c, store, "watch"), lambda evs: len(evs) == 5)
    assert evs[-1].data == {"n": 3}
    info = await eventually(lambda: c.link_info(store, "watch"), lambda i: i.lag == 0 and i.events_processed == 4)
    assert info.status == "running"


# --- quotas -----------------------------------------------------------------------------------


def _quota(exc: QuotaExceededError, quota: str, limit: int, store: str) -> None:
    assert (exc.status, exc.code.value, exc.retryable) == (429, "quota_exceeded", False)
    assert {k: exc.details.get(k) for k in ("quota", "limit", "store")} == {
        "quota": quota,
        "limit": limit,
        "store": store,
    }, exc.details


async def test_subscriptions_quota(c: GaterClient, w: Wire) -> None:
    store = _name()
    for i in range(2):
        await c.save_subscription(store, "stream", "$all", f"sub{i}", subscriber=f"deliver.{store}.{i}")
    with pytest.raises(AlreadyExistsError):  # saving an existing one is not a new one
        await c.save_subscription(store, "stream", "$all", "sub0", subscriber=f"deliver.{store}.0")
    with pytest.raises(QuotaExceededError) as err:
        await c.save_subscription(store, "stream", "$all", "sub2", subscriber=f"deliver.{store}.2")
    _quota(err.value, "subscriptions_per_store", 2, store)
    body = {"type": "stream", "selector": "$all", "name": "sub3", "subscriber": "deliver.x"}
    r = await w.call(store, "save", body, service="subscription")
    assert r.headers["Nats-Service-Error-Code"] == "429"
    r.error("quota_exceeded")
    await c.remove_subscription(store, "stream", "$all", "sub0")  # freeing one makes room
    await c.save_subscription(store, "stream", "$all", "sub2", subscriber=f"deliver.{store}.2")
    # the quota is per store
    await c.save_subscription(_name(), "stream", "$all", "sub0", subscriber="deliver.other")


async def test_links_quota(c: GaterClient) -> None:
    store = _name()
    for i in range(2):
        await c.create_link(store, {"name": f"l{i}", "source": {"type": "all"}})
    with pytest.raises(QuotaExceededError) as err:
        await c.create_link(store, {"name": "l2", "source": {"type": "all"}})
    _quota(err.value, "links_per_store", 2, store)
    with pytest.raises(AlreadyExistsError):  # a name in use says so, also at the limit
        await c.create_link(store, {"name": "l1", "source": {"type": "all"}})
    await c.delete_link(store, "l0")
    await c.create_link(store, {"name": "l2", "source": {"type": "all"}})


SCHEMA = {"version": 1, "json_schema": {"type": "object"}}


async def test_schemas_quota(c: GaterClient) -> None:
    store = _name()
    await c.append_events(store, "s", [{"event_type": "A", "data": {}}])
    await c.register_schema(store, "A", SCHEMA)
    await c.register_schema(store, "B", SCHEMA)
    # a new version of a registered type is not a new schema
    v2 = {"version": 2, "upcast_from": {"1": [{"op": "rename", "from": "a", "to": "b"}]}}
    await c.register_schema(store, "A", v2)
    with pytest.raises(QuotaExceededError) as err:
        await c.register_schema(store, "C", SCHEMA)
    _quota(err.value, "schemas_per_store", 2, store)
    await c.unregister_schema(store, "B")
    await eventually(lambda: c.list_schemas(store), lambda rows: len(rows) == 1)
    await c.register_schema(store, "C", SCHEMA)


async def test_channel_forwardings_quota(w: Wire) -> None:
    channel = "events"
    topic = _name("t")
    ids = []
    for i in range(2):
        body = {"channel": channel, "topic": f"{topic}.{i}", "deliver_to": f"_INBOX.{topic}.{i}"}
        ids.append((await w.call("_", "subscribe", body, service="channel")).ok()["id"])
    body = {"channel": channel, "topic": f"{topic}.2", "deliver_to": f"_INBOX.{topic}.2"}
    details = (await w.call("_", "subscribe", body, service="channel")).error("quota_exceeded")
    assert details["quota"] == "forwardings_per_store" and details["limit"] == 2 and details["channel"] == channel
    (await w.call("_", "unsubscribe", {"id": ids[0]}, service="channel")).ok()
    ids[0] = (await w.call("_", "subscribe", body, service="channel")).ok()["id"]
    for id_ in ids:
        (await w.call("_", "unsubscribe", {"id": id_}, service="channel")).ok()


async def _auto_created(conn: Client) -> int:
    n = 0
    offset = 0
    while True:
        page = await _js(conn, "$JS.API.STREAM.LIST", {"offset": offset})
        infos = page.get("streams") or []
        for si in infos:
            if ((si.get("config") or {}).get("metadata") or {}).get("esdb_gater_auto_created") == "1":
                n += 1
        offset += len(infos)
        if not infos or offset >= int(page.get("total", 0)):
            return n


async def test_auto_created_stores_quota(c: GaterClient, conn: Client) -> None:
    room = AUTO_CREATED - await _auto_created(conn)
    assert room > 0, "the other tests of this module made too many stores for this test"
    for _ in range(room):
        await c.append_events(_name("auto"), "s", [{"event_type": "A", "data": {}}])
    store = _name("auto")
    with pytest.raises(QuotaExceededError) as err:
        await c.append_events(store, "s", [{"event_type": "A", "data": {}}])
    _quota(err.value, "auto_created_stores", AUTO_CREATED, store)
    assert await c.get_version(store, "s") == -1  # nothing was made
    # the other services' writes make stores the same way, so they count too
    other = _name("auto")
    with pytest.raises(QuotaExceededError):
        await c.record_snapshot(other, "src", "s", 1, {"state": 1})
    with pytest.raises(QuotaExceededError):
        await c.save_subscription(other, "stream", "$all", "sub", subscriber="deliver.x")
    with pytest.raises(QuotaExceededError):
        await c.create_link(other, {"name": "l", "source": {"type": "all"}})
    with pytest.raises(QuotaExceededError):
        await c.register_schema(other, "A", SCHEMA)
    assert await _auto_created(conn) == AUTO_CREATED
    # an explicit store.create (an admin's act) is not bounded by it
    info = await c.create_store(store)
    assert info.created
    await c.append_events(store, "s", [{"event_type": "A", "data": {}}])


# --- idle per-store state ---------------------------------------------------------------------


async def test_per_store_state_is_dropped_when_idle(w: Wire, running: Running) -> None:
    registries = [r for r in running.resources if isinstance(r, SchemaRegistry)]
    assert registries

    def held() -> int:
        return sum(r.watched() for r in registries)

    base = held()
    n = 30
    for _ in range(n):  # each schema.list of a new store name loads and watches its schemas
        (await w.call(_name("idle"), "list", {}, service="schema")).ok()
    assert held() >= n
    # nobody touches them any more: they go within an idle period (plus a sweep)
    await eventually(lambda: asyncio.sleep(0, held()), lambda count: count <= base, within=10 * IDLE_S + 10)
