"""nats/permissions.conf on a real nats-server: what each user may do, and every denial.

A server of its own starts with the file included; passwords come from its environment. The
stream and channel services run as ``services``; then ``client``, ``orders`` (one store) and
``guest`` (channel ops only) try what they may and may not do. A denied publish or subscribe
is proven twice: the server reports a permissions violation to the offender, and nobody
downstream sees the message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import GatewayTimeoutError
from esdb_gater.shared.core.settings import ChannelsSettings, Settings
from esdb_gater.shared.log.jetstream import flush_barrier
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security import capability as cap
from esdb_gater.shared.security.capability import Identity
from esdb_gater.shared.tooling.natsserver import NatsServer

CONF = Path(__file__).resolve().parents[2] / "nats" / "permissions.conf"
USERS = ("services", "client", "orders", "guest")
# letters first: nats-server parses an environment value like a config value ("1d…" would be a duration)
PASSWORDS = {u: "pw" + secrets.token_hex(12) for u in USERS}
ROOT = Identity.generate()


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    mp = pytest.MonkeyPatch()
    for user, pw in PASSWORDS.items():
        mp.setenv(f"ESDB_{user.upper()}_PASSWORD", pw)
    srv = NatsServer(name="perm", extra_config=CONF.read_text())
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()
        mp.undo()


@dataclass
class Conn:
    nc: Client
    errors: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


async def _connect(server: NatsServer, user: str) -> Conn:
    conn = Conn(nc=None)  # type: ignore[arg-type]

    async def on_error(e: Exception) -> None:
        conn.errors.append(str(e))

    conn.nc = await nats.connect(server.url, user=user, password=PASSWORDS[user], error_cb=on_error)
    return conn


async def _violation(conn: Conn, fragment: str, within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not any(fragment.lower() in v.lower() for v in conn.violations()):
        assert loop.time() < deadline, f"no permissions violation for {fragment!r}: {conn.errors}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
async def services(server: NatsServer) -> AsyncIterator[Running]:
    svc = await _connect(server, "services")
    settings = Settings(
        nats_url=server.url,
        auto_create_stores=True,
        channels=ChannelsSettings(hmac_secret="perm-secret", trusted_issuers=[ROOT.did]),
    )
    running = await start_services(["stream", "channel"], settings, nc=svc.nc)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def watcher(server: NatsServer, services: Running) -> AsyncIterator[Any]:
    """A services-user subscription on everything of ours: what actually got through."""
    conn = await _connect(server, "services")
    sub = await conn.nc.subscribe("esdb.>")
    await flush_barrier(conn.nc)
    yield sub
    await conn.nc.close()


async def _seen_before_marker(watcher: Any, conn: Conn) -> list[str]:
    """The subjects the watcher got before a marker that ``conn`` publishes now (to a subject
    it may publish to): the server handles a connection's messages in order, so anything of
    ``conn``'s that got through reached the watcher before the marker."""
    marker = f"esdb.api.orders.marker-{uuid.uuid4().hex}"
    await conn.nc.publish(marker, b"")
    await conn.nc.flush()
    out = []
    while (msg := await watcher.next_msg(timeout=10)).subject != marker:
        out.append(msg.subject)
    return out


async def _raw_connect(server: NatsServer, creds: dict[str, str]) -> str:
    """The server's first answer to a CONNECT (plain protocol: nats-py leaks its socket when a
    connect is refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ")
        connect = {"verbose": False, "pedantic": False, "protocol": 1, **creds}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_unknown_users_and_bad_passwords_are_refused(server: NatsServer) -> None:
    assert await _raw_connect(server, {"user": "client", "pass": PASSWORDS["client"]}) == "PONG"
    for creds in ({"user": "client", "pass": "wrong"}, {"user": "nobody", "pass": "x"}, {}):
        assert "Authorization Violation" in await _raw_connect(server, creds)


async def test_client_user_may_request_and_receive_channels(server: NatsServer, services: Running) -> None:
    conn = await _connect(server, "client")
    try:
        client = GaterClient(conn.nc, retry=None)
        sub = await client.subscribe("events", "perm.>")
        assert (await client.publish("events", "perm.ok", {"hello": "world"})).ok
        assert (await sub.next(3)).message == {"hello": "world"}
        assert (await client.append_events("orders", "o-1", [{"event_type": "Placed", "data": {}}])).version == 0
        assert conn.violations() == []
    finally:
        await conn.nc.close()


async def test_client_user_cannot_publish_deliveries_or_touch_the_log(server: NatsServer, watcher: Any) -> None:
    conn = await _connect(server, "client")
    try:
        nc = conn.nc
        for subject in (
            "esdb.ch.alerts.fake",
            "esdb.ch.events.user.created",
            "esdb.log.orders.e.o-1",
            "esdb.ix.orders.id.x",
            "esdb.chlog.alerts.fake",
            "esdb.chreplay",
        ):
            await nc.publish(subject, b'{"forged": true}')
            await flush_barrier(nc)
            await _violation(conn, f'publish to "{subject}"')
        for subject in ("$JS.API.STREAM.LIST", "$JS.API.STREAM.PURGE.esdb-log-orders", "$KV.esdb-chsubs.x"):
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, b"{}", timeout=0.3)
            await _violation(conn, f'publish to "{subject}"')
        for subject in ("esdb.log.>", "esdb.ix.>", "$JS.API.>", "esdb.api.>"):
            await nc.subscribe(subject)
            await flush_barrier(nc)
            await _violation(conn, f'subscription to "{subject}"')
        seen = await _seen_before_marker(watcher, conn)
        leaked = [s for s in seen if s.startswith(("esdb.ch.", "esdb.log.", "esdb.ix.", "esdb.chlog"))]
        assert leaked == []
    finally:
        await conn.nc.close()


async def test_store_user_reaches_only_its_store(server: NatsServer, services: Running, watcher: Any) -> None:
    conn = await _connect(server, "orders")
    try:
        client = GaterClient(conn.nc, retry=None, timeout=0.3)
        assert (await client.append_events("orders", "o-2", [{"event_type": "Placed", "data": {}}])).version == 0
        assert await client.get_version("orders", "o-2") == 0
        for attempt in (
            client.append_events("payments", "p-1", [{"event_type": "Paid", "data": {}}]),
            client.publish("events", "x", 1),
            client.channels(),
        ):
            with pytest.raises(GatewayTimeoutError):
                await attempt
        await _violation(conn, 'publish to "esdb.api.payments.stream.append"')
        await _violation(conn, 'publish to "esdb.api._.channel.publish"')
        await conn.nc.subscribe("esdb.ch.>")
        await flush_barrier(conn.nc)
        await _violation(conn, 'subscription to "esdb.ch.>"')
        # the refused requests themselves are before the marker; what the services would have
        # published for them (esdb.ch.events.x) could only follow a request that got through
        seen = await _seen_before_marker(watcher, conn)
        assert not [s for s in seen if "payments" in s or s.startswith(("esdb.ch.events.x", "esdb.api._.channel"))]
    finally:
        await conn.nc.close()


async def test_guest_receives_a_topic_only_through_a_capability_token(server: NatsServer, services: Running) -> None:
    guest_id = Identity.generate()
    token = cap.encode(
        cap.sign(cap.create(ROOT, guest_id, [("esdb://default/channel/events/news.*", "channel/*")]), ROOT)
    )
    conn = await _connect(server, "guest")
    pub = await _connect(server, "client")
    try:
        await conn.nc.subscribe("esdb.ch.events.news.*")
        await flush_barrier(conn.nc)
        await _violation(conn, 'subscription to "esdb.ch.events.news.*"')
        guest = GaterClient(conn.nc, retry=None)
        sub = await guest.subscribe("events", "news.*", token)
        await GaterClient(pub.nc, retry=None).publish("events", "news.today", {"headline": "ok"})
        got = await sub.next(3)
        assert (got.topic, got.message) == ("news.today", {"headline": "ok"})
        await guest.unsubscribe(sub)
        with pytest.raises(GatewayTimeoutError):
            await GaterClient(conn.nc, retry=None, timeout=0.3).append_events("orders", "g", [{"event_type": "X"}])
        await _violation(conn, 'publish to "esdb.api.orders.stream.append"')
        assert len(conn.violations()) == 2  # the two denials above, nothing else
    finally:
        await conn.nc.close()
        await pub.nc.close()
