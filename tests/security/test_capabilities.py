"""Capability tokens on every service (issue 10 item 3; docs/security.md "Capability tokens on
every service"), over the wire.

A nats-server of its own runs every service with ``security.capability_mode = required`` and a
trusted issuer made here. Each attack of the issue ("with capability mode required,
stream.append/read/delete still succeed without a token"; "channel.unsubscribe lets anyone
remove anyone's forwarding") is replayed and refused, nothing is written, and what must keep
working (health, ``$SRV.PING``, the services' calls to each other) still does."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import GatewayError, UnauthorizedError
from esdb_gater.shared.core.settings import SecuritySettings, Settings
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security import authz
from esdb_gater.shared.security import capability as cap
from esdb_gater.shared.security.capability import Identity
from esdb_gater.shared.tooling.natsserver import NatsServer
from tests.security.conftest import connection, own_server, own_services

REALM = "sec"
ROOT = Identity.generate()  # the trusted issuer
ALICE = Identity.generate()
BOB = Identity.generate()
STORE = "caps"


def token(grants: list[tuple[str, str]], holder: Identity = ALICE, ttl_s: int = 6 * 3600) -> str:
    """A token from ROOT. Some are made at import: a long life, so a slow run never outlives them."""
    return cap.encode(cap.sign(cap.create(ROOT, holder, grants, ttl_s=ttl_s), ROOT))


ADMIN = token([(f"esdb://{REALM}/*", "*")])


def res(kind: str, name: str = "", store: str = STORE) -> str:
    return f"esdb://{REALM}/{kind}/{store}" + (f"/{name}" if name else "")


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with own_server("caps") as srv:
        yield srv


@pytest.fixture(scope="module")
async def running(server: NatsServer) -> AsyncIterator[Running]:
    settings = Settings(
        nats_url=server.url,
        auto_create_stores=True,
        security=SecuritySettings(capability_mode="required", trusted_issuers=[ROOT.did], realm=REALM),
    )
    async with own_services(settings) as r:
        yield r


@pytest.fixture
async def conn(server: NatsServer, running: Running) -> AsyncIterator[Client]:
    async with connection(server.url) as nc:
        yield nc


def client(nc: Client, tok: str | None = None) -> GaterClient:
    return GaterClient(nc, token=tok, retry=None)


async def raw(nc: Client, subject: str, body: dict[str, Any], tok: str | None = None) -> tuple[bool, Any]:
    """(is_error, decoded reply) of a request sent with nothing but NATS."""
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
    reply = json.loads(msg.data)
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        return True, reply["error"]
    return False, reply


def _sid() -> str:
    return f"acct-{secrets.token_hex(4)}"


EVENT = {"event_type": "Opened", "data": {"card": "4111"}}


# --- the stream service ---------------------------------------------------------------------------


async def test_stream_ops_without_a_token_are_refused_and_write_nothing(conn: Client) -> None:
    sid = _sid()
    anon = client(conn)
    for call in (
        lambda: anon.append_events(STORE, sid, -1, [EVENT]),
        lambda: anon.get_events(STORE, sid, 0, 100),
        lambda: anon.get_version(STORE, sid),
        lambda: anon.delete_stream(STORE, sid),
    ):
        with pytest.raises(UnauthorizedError) as exc:
            await call()
        assert exc.value.details["reason"] == "capability_required"
    # nothing was written
    assert await client(conn, ADMIN).get_version(STORE, sid) == -1
    # and a delete without a token leaves the stream there
    await client(conn, ADMIN).append_events(STORE, sid, -1, [EVENT])
    with pytest.raises(UnauthorizedError):
        await anon.delete_stream(STORE, sid)
    assert await client(conn, ADMIN).get_version(STORE, sid) == 0


async def test_a_token_for_another_stream_is_refused(conn: Client) -> None:
    sid, other = _sid(), _sid()
    wrong = client(conn, token([(res("stream", other), "stream/*")]))
    for call in (
        lambda: wrong.append_events(STORE, sid, -1, [EVENT]),
        lambda: wrong.get_events(STORE, sid, 0, 100),
        lambda: wrong.delete_stream(STORE, sid),
    ):
        with pytest.raises(UnauthorizedError) as exc:
            await call()
        assert exc.value.details["reason"] == "insufficient_permissions"
        assert exc.value.details["resource"] == res("stream", sid)
    # the same stream in another store is another resource
    elsewhere = client(conn, token([(res("stream", sid, store="other"), "stream/*")]))
    with pytest.raises(UnauthorizedError):
        await elsewhere.append_events(STORE, sid, -1, [EVENT])
    # a read grant does not append
    reader = client(conn, token([(res("stream", sid), "stream/read")]))
    with pytest.raises(UnauthorizedError):
        await reader.append_events(STORE, sid, -1, [EVENT])
    assert await client(conn, ADMIN).get_version(STORE, sid) == -1


async def test_the_right_grant_is_allowed(conn: Client) -> None:
    sid = _sid()
    holder = client(conn, token([(res("stream", "acct-*"), "stream/*")]))
    await holder.append_events(STORE, sid, -1, [EVENT])
    assert [e.event_type for e in await holder.get_events(STORE, sid, 0, 100)] == ["Opened"]
    await holder.delete_stream(STORE, sid)
    # the raw header works as well as the client's
    is_err, reply = await raw(conn, f"esdb.api.{STORE}.stream.version", {"stream_id": sid}, ADMIN)
    assert not is_err and reply == {"version": -1}


async def test_expired_and_untrusted_tokens_are_refused(conn: Client) -> None:
    sid = _sid()
    rogue = Identity.generate()
    forged = cap.encode(cap.sign(cap.create(rogue, rogue, [(f"esdb://{REALM}/*", "*")]), rogue))
    expired = cap.encode(
        cap.sign(cap.create(ROOT, ALICE, [(f"esdb://{REALM}/*", "*")], now=1_700_000_000, ttl_s=60), ROOT)
    )
    for tok, reason in ((forged, "untrusted_issuer"), (expired, "expired"), ("not.a.jwt", "parse_error")):
        with pytest.raises(UnauthorizedError) as exc:
            await client(conn, tok).append_events(STORE, sid, -1, [EVENT])
        assert exc.value.details["reason"] == reason
    is_err, reply = await raw(conn, f"esdb.api.{STORE}.stream.version", {"stream_id": sid}, None)
    assert is_err and reply["details"]["reason"] == "capability_required"
    assert await client(conn, ADMIN).get_version(STORE, sid) == -1


# --- one op (at least) of every other service ----------------------------------------------------

# (service, op, body, the grant that allows it)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, str]]] = [
    ("store", "info", {}, (res("store"), "store/read")),
    ("stream", "list", {}, (res("store"), "store/read")),
    ("snapshot", "list", {"source_uuid": "s", "stream_uuid": "acct-1"}, (res("snapshot", "acct-1"), "snapshot/read")),
    ("subscription", "list", {}, (res("store"), "subscription/read")),
    ("schema", "list", {}, (res("store"), "schema/read")),
    ("link", "list", {}, (res("store"), "link/read")),
    ("scavenger", "policy_list", {}, (res("store"), "store/read")),
    ("causation", "correlated", {"correlation_id": "c-1"}, (res("store"), "causation/read")),
    ("channel", "list", {}, (f"esdb://{REALM}/store/_", "store/read")),
]


@pytest.mark.parametrize(("service", "op", "body", "grant"), CASES, ids=[f"{c[0]}.{c[1]}" for c in CASES])
async def test_every_service_enforces(
    conn: Client, service: str, op: str, body: dict[str, Any], grant: tuple[str, str]
) -> None:
    store = "_" if service == "channel" else STORE
    subject = f"esdb.api.{store}.{service}.{op}"
    is_err, reply = await raw(conn, subject, body)
    assert is_err and reply["code"] == "unauthorized" and reply["details"]["reason"] == "capability_required"
    wrong_action = token([(grant[0], "nothing/here")])
    is_err, reply = await raw(conn, subject, body, wrong_action)
    assert is_err and reply["details"]["reason"] == "insufficient_permissions"
    is_err, reply = await raw(conn, subject, body, token([grant]))
    assert not is_err, reply


async def test_writes_of_other_services_need_their_grant(conn: Client) -> None:
    """snapshot.record, schema.register, subscription.save, link.create without the grant write nothing."""
    sid = _sid()
    stream_only = client(conn, token([(res("stream", sid), "*")]))
    with pytest.raises(UnauthorizedError):
        await stream_only.record_snapshot(STORE, "src", sid, 1, {"n": 1})
    with pytest.raises(UnauthorizedError):
        await stream_only.register_schema(STORE, "Opened", {"version": 1})
    with pytest.raises(UnauthorizedError):
        await stream_only.save_subscription(STORE, "stream", sid, "s-" + sid, subscriber="_INBOX.caps")
    with pytest.raises(UnauthorizedError):
        await stream_only.create_link(STORE, {"name": "l-" + sid, "source": {"type": "stream", "stream_id": sid}})
    admin = client(conn, ADMIN)
    with pytest.raises(GatewayError) as exc:
        await admin.read_snapshot(STORE, "src", sid)
    assert exc.value.code.value != "unauthorized"
    assert [s.event_type for s in await admin.list_schemas(STORE)] == []
    assert [s.name for s in await admin.get_subscriptions(STORE)] == []
    assert [lk.name for lk in await admin.list_links(STORE)] == []


# --- what stays open, and the services' own credential -----------------------------------------


async def test_health_and_srv_discovery_stay_open(conn: Client) -> None:
    anon = client(conn)
    assert await anon.quick_health_check(STORE)
    assert await anon.get_memory_level(STORE) in ("normal", "elevated", "critical")
    report = await anon.health()
    assert report.status in ("healthy", "degraded")
    ping = await conn.request("$SRV.PING.esdb-stream", b"", timeout=5)
    assert json.loads(ping.data)["name"] == "esdb-stream"


async def test_the_link_service_writes_its_stream_with_the_service_credential(conn: Client) -> None:
    """The link service appends to ``$link:<name>`` through the stream service: in required mode
    that works only because the call carries the services' credential."""
    admin = client(conn, ADMIN)
    sid, name = _sid(), f"l{secrets.token_hex(4)}"
    await admin.append_events(STORE, sid, -1, [EVENT, EVENT, EVENT])
    await admin.create_link(STORE, {"name": name, "source": {"type": "stream", "stream_id": sid}})
    await admin.start_link(STORE, name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await admin.link_info(STORE, name)).events_processed < 3:
        assert loop.time() < deadline, await admin.link_info(STORE, name)
        await asyncio.sleep(0.05)
    events = await admin.get_events(STORE, f"$link:{name}", 0, 100)
    assert len(events) == 3
    await admin.delete_link(STORE, name, delete_stream=True)


async def test_the_scavenger_asks_the_snapshot_service_with_the_service_credential(conn: Client) -> None:
    admin = client(conn, ADMIN)
    sid = _sid()
    for v in range(3):  # scavenging removes whole appends
        await admin.append_events(STORE, sid, v - 1, [EVENT])
    await admin.record_snapshot(STORE, "src", sid, 1, {"n": 2})
    result = await admin.scavenge(STORE, sid, require_snapshot=True, before_version=2)
    assert result.deleted_count == 2 and result.snapshot_version == 1


async def test_a_client_token_is_not_the_service_credential(conn: Client) -> None:
    """Even a token granting everything does not reach the services-only subjects."""
    sid = f"$link:{secrets.token_hex(4)}"
    body = {"stream_id": sid, "expected_version": -1, "events": [EVENT]}
    with pytest.raises(nats.errors.NoRespondersError):
        await raw(conn, f"esdb.internal.{STORE}.stream.nope", body, ADMIN)
    is_err, reply = await raw(conn, f"esdb.internal.{STORE}.stream.append", body, ADMIN)
    assert is_err and reply["code"] == "unauthorized"
    assert await client(conn, ADMIN).get_version(STORE, sid) == -1


# --- channel.unsubscribe: only the creator or store/admin -----------------------------------------


async def test_only_the_creator_or_an_admin_removes_a_forwarding(conn: Client) -> None:
    topic = f"t{secrets.token_hex(4)}"
    sub_grant = [(f"esdb://{REALM}/channel/events/*", "channel/*")]
    alice = client(conn, token(sub_grant, ALICE))
    bob = client(conn, token(sub_grant, BOB))
    inbox = conn.new_inbox()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await received.put(msg.data)

    forwarded = await conn.subscribe(inbox, cb=on_msg)
    reply = await alice.request("_", "channel", "subscribe", {"channel": "events", "topic": topic, "deliver_to": inbox})
    fid = reply["id"]

    for who, reason in ((client(conn), "capability_required"), (bob, "insufficient_permissions")):
        with pytest.raises(UnauthorizedError) as exc:
            await who.request("_", "channel", "unsubscribe", {"id": fid})
        assert exc.value.details["reason"] == reason
    # a token in the body is checked the same way
    with pytest.raises(UnauthorizedError):
        await client(conn).request("_", "channel", "unsubscribe", {"id": fid, "capability_token": bob.token})
    # the forwarding still delivers
    await alice.publish("events", topic, {"n": 1})
    assert json.loads(await asyncio.wait_for(received.get(), 5))["message"] == {"n": 1}
    # the creator (another token of the same holder) removes it
    alice2 = client(conn, token([(f"esdb://{REALM}/channel/events/other", "channel/publish")], ALICE))
    await alice2.request("_", "channel", "unsubscribe", {"id": fid})
    # the service forwards a message before it answers the publish, on one connection, and this
    # connection gets both in that order: a forwarded copy would be here by the time the answer is
    await alice.publish("events", topic, {"n": 2})
    assert forwarded.pending_msgs == 0 and received.empty()

    # a holder of store/admin on the store-less ops removes anyone's
    reply = await alice.request("_", "channel", "subscribe", {"channel": "events", "topic": topic, "deliver_to": inbox})
    admin = client(conn, token([(f"esdb://{REALM}/store/_", "store/admin")], BOB))
    await admin.request("_", "channel", "unsubscribe", {"id": reply["id"]})


async def test_channel_ops_follow_the_global_mode(conn: Client) -> None:
    """No per-channel override: the channel takes the stricter of channels.capability_mode
    (optional) and security.capability_mode (required)."""
    chans = {c.name: c for c in await client(conn, ADMIN).channels()}
    assert chans["events"].capability_mode == "required"
    with pytest.raises(UnauthorizedError) as exc:
        await client(conn).publish("events", "x", {"n": 1})
    assert exc.value.details["reason"] == "capability_required"
    # the header token serves the channel ops too (no body field needed)
    await client(conn, token([(f"esdb://{REALM}/channel/events/x", "channel/publish")])).publish("events", "x", {})


async def test_subscription_control_subjects_need_the_service_credential(conn: Client, running: Running) -> None:
    """``subscription.replay_parked``/``ack`` are forwarded to the delivering instance on
    ``<prefix>.api.<store>.subscription.ctl.<key>.{replay,ack}``, which clients may publish to
    (native acks of deliveries use the same root). Without the services' credential a direct
    request there is ignored, so it cannot bypass the ops' capability checks."""
    admin = client(conn, ADMIN)
    sid, name = _sid(), f"s{secrets.token_hex(4)}"
    info = await admin.save_subscription(STORE, "stream", sid, name, subscriber=conn.new_inbox())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (await admin.get_subscription(STORE, name)).active:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    ctl = f"esdb.api.{STORE}.subscription.ctl.{info.key}.replay"
    with pytest.raises(nats.errors.TimeoutError):
        await conn.request(ctl, b"{}", timeout=1, headers={"Authorization": f"Bearer {ADMIN}"})
    policy = authz.for_connection(running.nc)
    assert policy is not None and policy.credential is not None
    msg = await conn.request(ctl, b"{}", timeout=5, headers=policy.credential.headers())
    assert json.loads(msg.data) == {"replayed": 0}
    assert await admin.replay_parked(STORE, name) == 0
    await admin.remove_subscription(STORE, "stream", sid, name)
