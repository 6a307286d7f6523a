"""Requests start from the connection's read loop while a slot is free and wait in the
endpoint's queue when none is (issue 11): nothing is lost or answered twice, at most
``max_in_flight`` handlers run at once, and ``$SRV.STATS`` counts every request once."""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client

from esdb_gater.shared.core.connection import connect
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.models.common import Request, Response
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec, _Slots, start_service


class EchoRequest(Request):
    n: int


class EchoResponse(Response):
    n: int


async def test_slots_pass_to_waiters_in_order_and_survive_cancellation() -> None:
    slots = _Slots(1)
    assert slots.try_take()
    assert not slots.try_take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    a = asyncio.create_task(wait("a"))
    b = asyncio.create_task(wait("b"))
    c = asyncio.create_task(wait("c"))
    await asyncio.sleep(0)
    b.cancel()  # a waiter that gave up is skipped
    slots.give()
    await asyncio.sleep(0)
    assert order == ["a"]
    slots.give()
    await asyncio.sleep(0)
    assert order == ["a", "c"]
    slots.give()
    assert slots.free == 1 and slots.try_take()
    await asyncio.gather(a, c)
    assert b.cancelled()


async def test_requests_beyond_the_slots_queue_and_all_are_answered_once(nats_url: str, nc: Client) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def echo(req: EchoRequest, ctx: str) -> EchoResponse:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return EchoResponse(n=req.n)

    spec: ServiceSpec[str] = ServiceSpec(
        name="esdb-slotstest",
        token="slotstest",
        version="0.0.1",
        description="test",
        ops=[Op("echo", echo, EchoRequest, EchoResponse)],
        make_ctx=lambda store: store,
    )
    svc_nc = await connect(nats_url)
    svc = await start_service(svc_nc, spec, Subjects("esdb"), max_in_flight=3)
    try:
        await svc_nc.flush()
        calls = [
            asyncio.create_task(nc.request("esdb.api.s1.slotstest.echo", json.dumps({"n": i}).encode(), timeout=10))
            for i in range(12)
        ]
        for _ in range(200):  # three handlers started, nine requests waiting for a slot
            if running == 3:
                break
            await asyncio.sleep(0.01)
        assert running == 3
        release.set()
        replies = await asyncio.gather(*calls)
        assert sorted(json.loads(r.data)["n"] for r in replies) == list(range(12))
        assert peak == 3
        stats = json.loads((await nc.request("$SRV.STATS.esdb-slotstest", b"", timeout=2)).data)
        (ep,) = [e for e in stats["endpoints"] if e["name"] == "echo"]
        assert ep["num_requests"] == 12
        assert ep["num_errors"] == 0
    finally:
        await svc.stop()
        await svc_nc.close()
