"""Subscription catch-up: how fast the subscription service delivers a stored stream to a
subscriber that acks every event (or every batch, ``batch=True``), against a raw JetStream
ordered consumer reading the same log subject (msgpack-decoding each commit) in the same run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.bench.measure import Sample

__all__ = ["gateway_catch_up", "raw_ordered_catch_up"]


async def gateway_catch_up(
    nc: Client, store: str, stream_id: str, n: int, within: float = 120.0, *, batch: bool = False, codec: str = "json"
) -> Sample:
    """Save a subscription from the start of ``stream_id`` and time the arrival of all ``n``
    events at our subject, acking each natively (a reply to the delivery). ``batch``: delivery
    ``batch`` (up to 100 events a message, each decoded here with ``codec``) and one native ack
    per batch."""
    decode = msgpack.unpackb if codec == "msgpack" else json.loads
    subject = f"bench.sub.{uuid.uuid4().hex[:8]}"
    name = f"bench-{uuid.uuid4().hex[:8]}"
    count = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += len(decode(msg.data)["events"]) if batch else 1
        await msg.respond(b"")
        if count >= n and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
    body = {
        "type": "stream",
        "selector": stream_id,
        "name": name,
        "start_from": "start",
        "subscriber": subject,
        "max_in_flight": 1000,
    }
    if batch:
        body |= {"delivery": "batch", "batch_max": 100, "codec": codec}
    started = time.perf_counter()
    reply = await nc.request(f"esdb.api.{store}.subscription.save", _json(body), timeout=10)
    if reply.headers and "Nats-Service-Error-Code" in reply.headers:
        raise RuntimeError(f"subscription save failed: {reply.data!r}")
    try:
        await asyncio.wait_for(done, within)
    finally:
        elapsed = time.perf_counter() - started
        await sub.unsubscribe()
        await nc.request(
            f"esdb.api.{store}.subscription.remove",
            _json({"type": "stream", "selector": stream_id, "name": name}),
            timeout=10,
        )
    return Sample(ops=count, elapsed=elapsed, latencies=[])


async def raw_ordered_catch_up(nc: Client, stream: str, subject: str, n: int, within: float = 120.0) -> Sample:
    """A nats-py ordered consumer over the same subject, decoding every commit."""
    js = nc.jetstream()
    got = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        nonlocal got
        got += len(msgpack.unpackb(msg.data, raw=False))
        if got >= n and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    sub = await js.subscribe(subject, stream=stream, cb=on_msg, ordered_consumer=True, inactive_threshold=1.0)
    try:
        await asyncio.wait_for(done, within)
    finally:
        elapsed = time.perf_counter() - started
        await sub.unsubscribe()
    return Sample(ops=got, elapsed=elapsed, latencies=[])


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
