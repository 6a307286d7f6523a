"""Channel publish → deliver throughput, HMAC on, against raw core NATS request/reply, in one run.

Each channel op signs a fresh message (``esdb_gater.shared.security.signing.sign``; a unique id, so no replay),
sends ``<prefix>.api._.channel.publish`` and waits both for the ``ok`` and for the message to
arrive at a subscriber of the delivery subject: one op is the whole publish → deliver path
(HMAC verification, the shared replay record in JetStream, the priority queue, the delivery).
The unsigned row takes the same path without the signature and its replay record. The raw row
is one core NATS request to a zero-work responder: the floor under any request/reply service.

Wiring (bench/__main__.py): start the channel service with the secret, e.g.
``channel_child(url).start()`` (a ``esdb_gater.bench.procs.Child``), then
``rows = await channel_vs_raw(nc, duration=..., zero_subject=ZERO_SUBJECT)``; each value is a
``esdb_gater.bench.measure.Sample`` (ops/s = deliveries/s, p50/p99 = publish → deliver latency).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.bench.measure import Op, Sample, concurrent
from esdb_gater.bench.procs import ROOT, Child
from esdb_gater.shared.security import signing as security

__all__ = ["BENCH_SECRET", "channel_child", "channel_publish_deliver", "channel_vs_raw", "raw_request_reply"]

BENCH_SECRET = "bench-channel-secret"
ERROR_HEADER = "Nats-Service-Error-Code"


def channel_child(nats_url: str, secret: str = BENCH_SECRET, profile_to: str | None = None) -> Child:
    """The channel service in its own process, with the HMAC secret the benchmark signs with.

    ``profile_to``: run it under cProfile and write the stats there when it stops."""
    env = dict(os.environ)
    env["ESDB_GATER_CHANNELS__HMAC_SECRET"] = secret
    for key in list(env):
        if key.startswith("OTEL_EXPORTER_OTLP"):
            del env[key]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable]
    if profile_to:
        argv += ["-m", "cProfile", "-o", profile_to]
    argv += ["-m", "esdb_gater.cli", "serve", "channel", "--nats", nats_url]
    return Child("channel-service", argv, env)


async def channel_publish_deliver(
    nc: Client,
    *,
    duration: float,
    concurrency: int = 32,
    secret: str | None = BENCH_SECRET,
    channel: str = "events",
    prefix: str = "esdb",
    wait_s: float = 5.0,
) -> Sample:
    """``concurrency`` publishers, each waiting for its own message at the subscriber.
    ``secret=None`` publishes unsigned messages (the channel must not require HMAC)."""
    loop = asyncio.get_running_loop()
    topic = "bench." + uuid.uuid4().hex[:8]
    pending: dict[str, asyncio.Future[None]] = {}
    errors = 0
    counter = 0

    async def on_delivery(msg: Msg) -> None:
        try:
            mid = json.loads(msg.data)["message"]["id"]
        except (ValueError, KeyError, TypeError):
            return
        fut = pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    sub = await nc.subscribe(f"{prefix}.ch.{channel}.{topic}", cb=on_delivery, pending_msgs_limit=1_000_000)
    await nc.flush()
    subject = f"{prefix}.api._.channel.publish"
    run = uuid.uuid4().hex[:6]

    async def op() -> None:
        nonlocal counter, errors
        counter += 1
        mid = f"{run}-{counter}"
        message: dict[str, Any] = {"id": mid, "value": counter}
        if secret is not None:
            message = security.sign(message, secret)
        fut: asyncio.Future[None] = loop.create_future()
        pending[mid] = fut
        body = json.dumps({"channel": channel, "topic": topic, "message": message}).encode()
        try:
            reply = await nc.request(subject, body, timeout=wait_s)
            if reply.headers and ERROR_HEADER in reply.headers:
                raise RuntimeError(reply.data[:200])
            if not fut.done():  # the delivery is published before the reply, so it is usually in already
                await asyncio.wait_for(fut, wait_s)
        except Exception:
            errors += 1
            pending.pop(mid, None)

    ops: list[Op] = [op] * concurrency
    try:
        return await concurrent(ops, duration, errors=lambda: errors)
    finally:
        await sub.unsubscribe()


async def raw_request_reply(
    nc: Client, *, duration: float, concurrency: int = 32, subject: str | None = None, wait_s: float = 5.0
) -> Sample:
    """Core NATS request/reply to ``subject`` (a running zero responder, e.g. esdb_gater.bench.zero), or to
    a responder started here on a connection of its own."""
    own: Client | None = None
    if subject is None:
        subject = "bench.chraw." + uuid.uuid4().hex[:8]
        own = Client()
        url = nc.connected_url.geturl() if nc.connected_url else "nats://127.0.0.1:4222"
        await own.connect(servers=[url])
        responder = own

        async def answer(msg: Msg) -> None:
            if msg.reply:
                await responder.publish(msg.reply, b"{}")

        await own.subscribe(subject, cb=answer)
        await own.flush()
    errors = 0

    async def op() -> None:
        nonlocal errors
        try:
            await nc.request(subject, b"{}", timeout=wait_s)
        except Exception:
            errors += 1

    try:
        return await concurrent([op] * concurrency, duration, errors=lambda: errors)
    finally:
        if own is not None:
            await own.close()


async def channel_vs_raw(
    nc: Client,
    *,
    duration: float = 3.0,
    concurrency: int = 32,
    secret: str = BENCH_SECRET,
    zero_subject: str | None = None,
    prefix: str = "esdb",
) -> dict[str, Sample]:
    """The three rows, in one run: ``channel_hmac`` (signed publish → deliver), ``channel_plain``
    (the same, unsigned) and ``raw_request_reply`` (core NATS)."""
    return {
        "channel_hmac": await channel_publish_deliver(
            nc, duration=duration, concurrency=concurrency, secret=secret, prefix=prefix
        ),
        "channel_plain": await channel_publish_deliver(
            nc, duration=duration, concurrency=concurrency, secret=None, prefix=prefix
        ),
        "raw_request_reply": await raw_request_reply(
            nc, duration=duration, concurrency=concurrency, subject=zero_subject
        ),
    }
