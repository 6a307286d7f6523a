"""Shedding only under real overload (issue 14, docs/adr/0020-shedding-on-real-overload.md): an idle
channel service with the default settings (as `gater up` runs it) takes a burst of 150 concurrent
publishes within the rate limits without one ``overloaded``. The stalled-queue side is tested
deterministically with a fake clock: tests/unit/test_channel_service.py and
tests/integration/test_channel.py::test_a_stalled_queue_sheds_low_priority_first."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.log.jetstream import flush_barrier

BURST = 150


async def _burst(client: GaterClient, channel: str, topics: list[str]) -> list[Any]:
    return await asyncio.wait_for(
        asyncio.gather(*(client.publish(channel, t, {"i": i}) for i, t in enumerate(topics)), return_exceptions=True),
        60,
    )


@pytest.mark.parametrize(
    ("channel", "spread"),
    [
        ("diagnostics", True),  # low, 100/s per topic: the case, 150 topics keep it within the limit
        ("logging", False),  # low, 1000/s per topic: one topic
        ("system", False),  # normal, no rate limit
    ],
)
async def test_an_idle_service_accepts_a_burst(client: GaterClient, nc: Client, channel: str, spread: bool) -> None:
    base = "burst" + uuid.uuid4().hex[:8]
    topics = [f"{base}.{i}" if spread else base for i in range(BURST)]
    got: list[bytes] = []
    all_in = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        got.append(msg.data)
        if len(got) == BURST:
            all_in.set()

    sub = await nc.subscribe(f"esdb.ch.{channel}.{base}.>" if spread else f"esdb.ch.{channel}.{base}", cb=on_msg)
    await flush_barrier(nc)
    replies = await _burst(client, channel, topics)
    errors = [r for r in replies if isinstance(r, BaseException)]
    assert errors == [], [getattr(e, "details", e) for e in errors[:5]]
    assert len(replies) == BURST and all(r.ok for r in replies)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 10)
    await sub.unsubscribe()
    assert len(got) == BURST  # accepted and delivered, none dropped
