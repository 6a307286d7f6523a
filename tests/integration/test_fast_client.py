"""FastClient's cheaper paths (issue 11): writes scheduled once per loop turn, inline
subscriptions resolved in the read loop, the event log's own request inbox, and service
endpoints started from the read loop. Against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.shared.core.connection import FastClient, connect, flush_barrier
from esdb_gater.shared.core.errors import GatewayTimeoutError, UnavailableError
from esdb_gater.shared.log.jetstream import Log


@pytest.fixture
async def fast(nats_url: str) -> AsyncIterator[FastClient]:
    conn = await connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_publishes_of_one_turn_all_arrive_in_order(fast: FastClient, nc: Client) -> None:
    got: list[bytes] = []
    done = asyncio.Event()

    async def on(msg: Msg) -> None:
        got.append(msg.data)
        if len(got) == 500:
            done.set()

    await nc.subscribe("fast.order", cb=on)
    await nc.flush()
    for i in range(500):  # no await yields to the loop between most of these: one write
        await fast.publish("fast.order", str(i).encode())
    await asyncio.wait_for(done.wait(), 5)
    assert got == [str(i).encode() for i in range(500)]


async def test_flush_is_still_a_barrier(fast: FastClient, nc: Client) -> None:
    """A subscription made just before ``flush()`` is at the server when it returns: a message
    published at once from another connection reaches it (the write is only scheduled, so the
    barrier has to wait for it)."""
    for i in range(20):
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on(msg: Msg, got: asyncio.Future[bytes] = got) -> None:
            if not got.done():
                got.set_result(msg.data)

        sub = await fast.subscribe(f"fast.barrier.{i}", cb=on)
        await fast.flush()
        await nc.publish(f"fast.barrier.{i}", b"x")
        assert await asyncio.wait_for(got, 2) == b"x"
        await sub.unsubscribe()


async def test_an_inline_hook_sees_every_message_in_order(fast: FastClient, nc: Client) -> None:
    got: list[bytes] = []
    await fast.subscribe_inline("fast.inline", lambda m: got.append(m.data))
    await fast.flush()
    for i in range(200):
        await nc.publish("fast.inline", str(i).encode())
    await nc.flush()
    for _ in range(200):
        if len(got) == 200:
            break
        await asyncio.sleep(0.01)
    assert got == [str(i).encode() for i in range(200)]


async def test_a_hook_that_raises_does_not_stop_the_read_loop(fast: FastClient, nc: Client) -> None:
    def boom(msg: Msg) -> None:
        raise RuntimeError("hook bug")

    await fast.subscribe_inline("fast.boom", boom)
    await fast.flush()
    await nc.publish("fast.boom", b"1")
    await nc.flush()

    # the same connection still answers requests afterwards
    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    sub = await nc.subscribe("fast.echo", cb=echo)
    await nc.flush()
    reply = await fast.request("fast.echo", b"still alive", timeout=2)
    assert reply.data == b"still alive"
    await sub.unsubscribe()


async def test_a_declined_message_goes_to_the_subscription_callback(fast: FastClient, nc: Client) -> None:
    via_cb: list[bytes] = []
    via_hook: list[bytes] = []

    async def cb(msg: Msg) -> None:
        via_cb.append(msg.data)

    def hook(msg: Msg) -> bool:
        if msg.data.startswith(b"even"):
            via_hook.append(msg.data)
            return True
        return False

    sub = await fast.subscribe("fast.declined", cb=cb)
    fast.inline(sub, hook)
    await fast.flush()
    for i in range(20):
        await nc.publish("fast.declined", (b"even" if i % 2 == 0 else b"odd") + str(i).encode())
    await nc.flush()
    for _ in range(200):
        if len(via_cb) + len(via_hook) == 20:
            break
        await asyncio.sleep(0.01)
    assert via_hook == [b"even" + str(i).encode() for i in range(0, 20, 2)]
    assert via_cb == [b"odd" + str(i).encode() for i in range(1, 20, 2)]


async def test_an_unsubscribed_inline_subscription_gets_nothing(fast: FastClient, nc: Client) -> None:
    got: list[bytes] = []
    sub = await fast.subscribe_inline("fast.gone", lambda m: got.append(m.data))
    await fast.flush()
    await sub.unsubscribe()
    await flush_barrier(fast)
    await nc.publish("fast.gone", b"late")
    await nc.flush()
    await asyncio.sleep(0.1)  # a marker is not possible for "nothing arrives": bounded wait
    assert got == []


async def test_the_log_answers_no_responders_and_timeouts_as_before(fast: FastClient, nc: Client) -> None:
    log = Log(fast, timeout=0.3)
    await log.start()
    try:
        with pytest.raises(UnavailableError):
            await log.api("fast.nobody.listens")

        async def silent(msg: Msg) -> None:
            return None

        await nc.subscribe("fast.silent", cb=silent)
        await nc.flush()
        with pytest.raises(GatewayTimeoutError):
            await log.api("fast.silent")
        assert log._waiting == {}  # nothing left behind by the failed requests

        async def answer(msg: Msg) -> None:
            await msg.respond(json.dumps({"ok": True}).encode())

        await nc.subscribe("fast.answers", cb=answer)
        await nc.flush()
        replies = await asyncio.gather(*(log.api("fast.answers") for _ in range(50)))
        assert replies == [{"ok": True}] * 50
        assert log._waiting == {}
    finally:
        await log.stop()


async def test_a_plain_nats_py_client_still_works_with_the_log(nats_url: str, nc: Client) -> None:
    plain = await nats.connect(nats_url)
    log = Log(plain, timeout=1.0)
    await log.start()
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(b"{}")

        await nc.subscribe("fast.plain", cb=answer)
        await nc.flush()
        assert await log.api("fast.plain") == {}
    finally:
        await log.stop()
        await plain.close()
