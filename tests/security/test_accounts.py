"""Tenants isolated by NATS accounts (issue 10 item 2, docs/adr/0014-tenant-accounts.md).

A server of its own runs the layout of shared/security/accounts.py (the text of nats/accounts.conf),
passwords from its environment. Every service runs on its own connection as its own user with
the secure settings, as ``gater up --secure`` and compose.yaml run them. Then the tenants try:
``orders`` listens to ``>`` while ``billing`` writes and reads a card number; ``orders`` reaches
for the services' JetStream API, billing's store, the services-only subjects, and points reply
subjects at billing's log; ``demo`` walks through the README and takes a persistent
subscription's deliveries. Last, the server's log must show no permission violation by any
service user: the least-privilege table let every path the tests took through."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import SecretStr

from esdb_gater.services import SERVICES, start_services
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.log.jetstream import flush_barrier
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security import accounts
from esdb_gater.shared.tooling.natsserver import NatsServer, find_nats_server
from esdb_gater.shared.tooling.probe import probe
from tests.security.conftest import own_server

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {u: accounts.new_password() for u in accounts.users()}
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    env = {accounts.password_env(u): pw for u, pw in PASSWORDS.items()}
    with own_server("accounts", extra_config=accounts.render(), env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
async def services(server: NatsServer) -> AsyncIterator[list[Running]]:
    base = Settings(nats_url=server.url, auto_create_stores=True, **accounts.secure_settings())  # type: ignore[arg-type]
    running: list[Running] = []
    try:
        for name in SERVICES:
            own = base.model_copy(update={"nats_user": name, "nats_password": SecretStr(PASSWORDS[name])})
            running.append(await start_services([name], own))
        yield running
    finally:
        for r in reversed(running):
            await r.stop()


@dataclass
class Tenant:
    nc: Client
    errors: list[str] = field(default_factory=list)

    async def call(self, subject: str, body: dict[str, Any], wait: float = 5.0) -> dict[str, Any]:
        msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=wait)
        out: dict[str, Any] = json.loads(msg.data)
        return out


async def _connect(server: NatsServer, user: str) -> Tenant:
    t = Tenant(nc=None)  # type: ignore[arg-type]

    async def on_error(e: Exception) -> None:
        t.errors.append(str(e))

    t.nc = await nats.connect(server.url, user=user, password=PASSWORDS[user], error_cb=on_error)
    return t


@pytest.fixture
async def tenants(server: NatsServer, services: list[Running]) -> AsyncIterator[dict[str, Tenant]]:
    out = {u: await _connect(server, u) for u in ("demo", "orders", "billing")}
    try:
        yield out
    finally:
        for t in out.values():
            await t.nc.close()


class Spy:
    """Everything one subscription received, to search for what must not be there."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []

    async def on(self, msg: Msg) -> None:
        self.msgs.append(msg)

    def blob(self) -> str:
        parts = []
        for m in self.msgs:
            parts += [m.subject, m.reply or "", json.dumps(m.headers or {}), m.data.decode("utf-8", "replace")]
        return "\n".join(parts)


def _append(stream_id: str, expected: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"stream_id": stream_id, "expected_version": expected, "events": [{"event_type": "Charged", "data": data}]}


async def test_the_tenant_walkthrough_works(tenants: dict[str, Tenant]) -> None:
    demo = tenants["demo"]
    assert await demo.call("esdb.api.demo.stream.version", {"stream_id": "walk"}) == {"version": -1}
    ok = await demo.call("esdb.api.demo.stream.append", _append("walk", -1, {"n": 1}))
    assert ok["version"] == 0
    read = await demo.call("esdb.api.demo.stream.read", {"stream_id": "walk"})
    assert [e["data"] for e in read["events"]] == [{"n": 1}]
    conflict = await demo.call("esdb.api.demo.stream.append", _append("walk", -1, {"n": 2}))
    assert conflict["error"]["code"] == "wrong_expected_version"


async def test_a_tenant_listening_to_everything_sees_nothing_of_another(
    server: NatsServer, tenants: dict[str, Tenant]
) -> None:
    orders, billing = tenants["orders"], tenants["billing"]
    spy = Spy()
    for subject in (">", "_INBOX.>", "_R_.>", "$JS.>"):
        await orders.nc.subscribe(subject, cb=spy.on)
    # positive control: inside the services account the card does travel on the services'
    # inboxes (Direct Get replies to the stream service); only another account keeps it out
    inside = await nats.connect(server.url, user="stream", password=PASSWORDS["stream"], inbox_prefix="_INBOX.stream")
    inbox_spy = Spy()
    await inside.subscribe("_INBOX.stream.>", cb=inbox_spy.on)
    await flush_barrier(orders.nc)
    await flush_barrier(inside)
    try:
        ok = await billing.call("esdb.api.billing.stream.append", _append("acct-1", -1, {"card": CARD}))
        assert ok["version"] == 0, ok
        read = await billing.call("esdb.api.billing.stream.read", {"stream_id": "acct-1"})
        assert read["events"][0]["data"] == {"card": CARD}
        await billing.call("esdb.api.billing.stream.version", {"stream_id": "acct-1"})
        # orders' own round trip: its subscriptions work, and everything sent before has arrived
        assert await orders.call("esdb.api.orders.stream.version", {"stream_id": "o-1"}) == {"version": -1}
        await flush_barrier(orders.nc)
        await flush_barrier(inside)
    finally:
        await inside.close()
    seen = spy.blob()
    assert "esdb.api.orders.stream.version" in seen  # the spy was listening
    assert CARD not in seen and "billing" not in seen and "acct-1" not in seen, seen[:2000]
    assert all(m.subject.startswith(("esdb.api.orders.", "_INBOX.", "$JS.EVENT.ADVISORY.")) for m in spy.msgs), [
        m.subject for m in spy.msgs
    ]
    assert CARD in inbox_spy.blob(), "the control saw no Direct Get reply: the test proves nothing"


async def test_a_tenant_cannot_reach_the_services_jetstream(tenants: dict[str, Tenant]) -> None:
    orders = tenants["orders"]
    # make sure billing's log exists, so a leak would name it
    await tenants["billing"].call("esdb.api.billing.stream.append", _append("acct-js", -1, {"card": CARD}))
    denied: list[str] = []
    for subject in (
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.INFO.esdb-log-billing",
        "$JS.API.DIRECT.GET.esdb-log-billing",
        "$JS.API.DIRECT.GET.KV_esdb-security",
    ):
        try:
            msg = await orders.nc.request(subject, b"{}", timeout=5)
        except NoRespondersError:  # nothing in the tenant's account answers this one
            denied.append(subject)
            continue
        # the tenant's own account answers, and it has no JetStream (err_code 10039)
        body = json.loads(msg.data) if msg.data else {}
        assert "billing" not in msg.data.decode() and CARD not in msg.data.decode(), (subject, msg.data)
        if body:
            assert body["error"]["err_code"] == 10039, (subject, body)
        else:
            assert msg.headers and msg.headers.get("Status") in ("503", "404"), (subject, msg.headers)
        denied.append(subject)
    assert len(denied) == 5
    # publishing on the log subject lands in the tenant's own account, not in billing's log
    await orders.nc.publish("esdb.log.billing.e.acct-js", b"forged")
    await flush_barrier(orders.nc)
    read = await tenants["billing"].call("esdb.api.billing.stream.read", {"stream_id": "acct-js"})
    assert [e["data"] for e in read["events"]] == [{"card": CARD}]
    assert (await tenants["billing"].call("esdb.api.billing.stream.version", {"stream_id": "acct-js"})) == {
        "version": 0
    }


async def test_a_tenant_cannot_call_another_tenants_store_or_services_only_subjects(
    tenants: dict[str, Tenant],
) -> None:
    orders = tenants["orders"]
    for subject in (
        "esdb.api.billing.stream.read",
        "esdb.api.demo.stream.version",
        "esdb.internal.orders.stream.append",
        "esdb.api._.channel.list",  # the channel API is granted to demo only
        "esdb.api._.health.check",
        "$SRV.PING",
    ):
        with pytest.raises((NoRespondersError, NatsTimeoutError)):
            await orders.nc.request(subject, json.dumps({"stream_id": "acct-1"}).encode(), timeout=1)


async def test_a_reply_subject_pointed_elsewhere_is_answered_in_the_askers_account_only(
    tenants: dict[str, Tenant],
) -> None:
    orders, billing = tenants["orders"], tenants["billing"]
    ok = await billing.call("esdb.api.billing.stream.append", _append("acct-2", -1, {"card": CARD}))
    assert ok["version"] == 0
    billing_spy = Spy()
    await billing.nc.subscribe(">", cb=billing_spy.on)
    own = Spy()
    await orders.nc.subscribe("esdb.log.billing.e.acct-2", cb=own.on)
    await orders.nc.subscribe("payments.execute", cb=own.on)
    await flush_barrier(billing.nc)
    await flush_barrier(orders.nc)
    for target in ("esdb.log.billing.e.acct-2", "payments.execute"):
        await orders.nc.publish("esdb.api.orders.stream.version", b'{"stream_id":"o-2"}', reply=target)
    # NATS rewrote the reply to _R_.… in the services account: the answers come back to
    # orders' own account, at the subjects it named there
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(own.msgs) < 2:
        assert loop.time() < deadline, [m.subject for m in own.msgs]
        await asyncio.sleep(0.02)
    assert sorted(m.subject for m in own.msgs) == ["esdb.log.billing.e.acct-2", "payments.execute"]
    assert all(json.loads(m.data) == {"version": -1} for m in own.msgs)
    # billing's stream is untouched and answers normally; billing saw none of it
    read = await billing.call("esdb.api.billing.stream.read", {"stream_id": "acct-2"})
    assert [e["version"] for e in read["events"]] == [0]
    assert await billing.call("esdb.api.billing.stream.version", {"stream_id": "acct-2"}) == {"version": 0}
    await flush_barrier(billing.nc)
    assert all(m.subject.startswith(("esdb.api.billing.", "_INBOX.")) for m in billing_spy.msgs), [
        m.subject for m in billing_spy.msgs
    ]


async def test_subscription_deliveries_reach_their_tenant_only(tenants: dict[str, Tenant]) -> None:
    demo, orders = tenants["demo"], tenants["orders"]
    orders_spy = Spy()
    await orders.nc.subscribe(">", cb=orders_spy.on)
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await demo.nc.subscribe("deliver.demo.x", cb=got.put)
    await flush_barrier(orders.nc)
    await flush_barrier(demo.nc)
    base = {"type": "stream", "selector": "sub-1", "start_from": "start"}
    saved = await demo.call("esdb.api.demo.subscription.save", {**base, "name": "s1", "subscriber": "deliver.demo.x"})
    assert saved.get("name") == "s1", saved
    await demo.call("esdb.api.demo.stream.append", _append("sub-1", -1, {"secret": "demo-only"}))
    msg = await asyncio.wait_for(got.get(), 10)
    assert json.loads(msg.data)["data"] == {"secret": "demo-only"}
    # the native ack goes back through demo's service import to the subscription service
    assert msg.reply and msg.reply.startswith("esdb.api.demo.subscription.ctl.")
    await msg.respond(b"")
    # the request ops that the subscription service forwards to the delivering instance over its
    # control subjects (ack by request, replay_parked) work across the accounts too
    await demo.call("esdb.api.demo.stream.append", _append("sub-1", 0, {"n": 2}))
    second = await asyncio.wait_for(got.get(), 10)
    assert json.loads(second.data)["data"] == {"n": 2}
    acked = await demo.call(
        "esdb.api.demo.subscription.ack", {"stream_id": "sub-1", "subscription_name": "s1", "event_number": 1}
    )
    assert "error" not in acked, acked
    replayed = await demo.call("esdb.api.demo.subscription.replay_parked", {"name": "s1"})
    assert "error" not in replayed, replayed
    # targets outside the store's deliver.<store>. space are refused (security.target_allow):
    # another tenant's delivery space, the services' own inboxes, any other subject
    for subscriber in ("deliver.orders.x", "_INBOX.stream.x", "payments.execute"):
        refused = await demo.call("esdb.api.demo.subscription.save", {**base, "name": "s2", "subscriber": subscriber})
        assert refused["error"]["code"] == "invalid_request", (subscriber, refused)
    await flush_barrier(orders.nc)
    assert "demo-only" not in orders_spy.blob()
    assert not [m for m in orders_spy.msgs if m.subject.startswith("deliver.")]


async def test_channels_reach_the_tenants_that_import_them(tenants: dict[str, Tenant]) -> None:
    demo, orders = tenants["demo"], tenants["orders"]
    orders_spy = Spy()
    await orders.nc.subscribe(">", cb=orders_spy.on)
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await demo.nc.subscribe("esdb.ch.events.>", cb=got.put)
    await flush_barrier(orders.nc)
    await flush_barrier(demo.nc)
    reply = await demo.call(
        "esdb.api._.channel.publish", {"channel": "events", "topic": "t1", "message": {"m": "chan-secret"}}
    )
    assert "error" not in reply, reply
    msg = await asyncio.wait_for(got.get(), 10)
    assert "chan-secret" in msg.data.decode()
    await flush_barrier(orders.nc)
    assert "chan-secret" not in orders_spy.blob()


async def test_the_container_health_check_works_as_a_service_user(
    server: NatsServer, services: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose.yaml's health check (shared/tooling/probe.py) connects as the container's service user."""
    monkeypatch.setenv("ESDB_GATER_NATS_USER", "stream")
    monkeypatch.setenv("ESDB_GATER_NATS_PASSWORD", PASSWORDS["stream"])
    stream = services[list(SERVICES).index("stream")].services[0].service
    assert await probe(server.url, [f"$SRV.PING.{stream._name}.{stream.id}", "$SRV.PING.esdb-health"], 5.0) == []


def test_the_layout_file_is_the_rendered_layout_and_valid(tmp_path: Path) -> None:
    text = (ROOT / "nats" / "accounts.conf").read_text()
    assert text == accounts.render(), (
        "nats/accounts.conf is stale: python -m esdb_gater.shared.security.accounts > nats/accounts.conf"
    )
    conf = tmp_path / "t.conf"
    (tmp_path / "accounts.conf").write_text(text)
    conf.write_text(f'port: -1\njetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude accounts.conf\n')
    env = {**os.environ, **{accounts.password_env(u): pw for u, pw in PASSWORDS.items()}}
    proc = subprocess.run([find_nats_server(), "-t", "-c", str(conf)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_zz_no_service_user_hit_a_permission_violation(server: NatsServer, services: list[Running]) -> None:
    """Runs last in this module: every path above went through the least-privilege table."""
    log = b"".join(server.log).decode(errors="replace")
    bad = [line for line in log.splitlines() if "Violation" in line and f'"{accounts.SERVICE_ACCOUNT}/user:' in line]
    assert not bad, "\n".join(bad[:20])


def test_gater_up_secure_prints_working_credentials_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("ESDB_GATER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "esdb_gater.cli", "up", "--secure", "--port", "0", "--data-dir", str(data)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        command = None
        for line in proc.stdout:
            lines.append(line)
            if "try: nats --server" in line:
                command = line
                break
        assert command is not None, "".join(lines)
        m = re.search(r"--server (\S+) --user demo --password (\S+) req (\S+) '(.*)'", command)
        assert m, command
        url, password, subject, body = m.groups()
        assert subject == "esdb.api.demo.stream.version"

        async def ask() -> dict[str, Any]:
            nc = await nats.connect(url, user="demo", password=password)
            try:
                msg = await nc.request(subject, body.encode(), timeout=5)
                out: dict[str, Any] = json.loads(msg.data)
                return out
            finally:
                await nc.close()

        assert asyncio.run(ask()) == {"version": -1}
        stored = data / accounts.PASSWORDS_FILE
        assert stored.stat().st_mode & 0o777 == 0o600
        # the next start reuses them
        assert accounts.load_or_create_passwords(data)["demo"] == password
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + rest
        assert "nats-server stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
