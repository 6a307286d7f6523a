"""A link's derived stream is an ordinary stream: the subscription service delivers it (with the
session's services: every service runs)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from esdb_gater.shared.client import GaterClient

pytestmark = pytest.mark.timeout(60)


def ev(t: str, data: Any) -> dict[str, Any]:
    return {"event_type": t, "data": data}


async def test_the_derived_stream_can_be_subscribed_to(client: GaterClient, store: str) -> None:
    await client.append_events(store, "src", [ev("A", {"i": 0}), ev("A", {"i": 1})])
    await client.create_link(store, {"name": "subbed", "source": {"type": "stream", "stream_id": "src"}})
    await client.start_link(store, "subbed")
    subject = "deliver." + uuid.uuid4().hex[:12]
    async with client.deliveries(subject) as d:
        await client.save_subscription(store, "stream", "$link:subbed", "follow", "start", subject)
        got = [await d.next(10.0) for _ in range(2)]
        await client.append_events(store, "src", [ev("A", {"i": 2})])
        got.append(await d.next(10.0))
        for x in got:
            await x.ack()
    await client.remove_subscription(store, "stream", "$link:subbed", "follow")
    await client.delete_link(store, "subbed")
    assert [(x.stream_id, x.version, x.event["data"]["i"]) for x in got] == [
        ("$link:subbed", 0, 0),
        ("$link:subbed", 1, 1),
        ("$link:subbed", 2, 2),
    ]
