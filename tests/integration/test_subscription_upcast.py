"""Subscription deliveries pass through the same upcasting as stream reads (SPEC.md §6)."""

from __future__ import annotations

import uuid

from esdb_gater.shared.client import GaterClient


async def test_deliveries_are_upcast_to_the_current_schema_version(client: GaterClient, store: str) -> None:
    await client.append_events(store, "pay-1", [{"event_type": "Paid", "data": {"amt": 5}}])
    await client.register_schema(
        store, "Paid", {"version": 2, "upcast_from": {"1": [{"op": "rename", "from": "amt", "to": "amount"}]}}
    )
    subject = f"deliver.{uuid.uuid4().hex[:10]}"
    async with client.deliveries(subject) as inbox:
        await client.save_subscription(store, "event_type", "Paid", "upcast", "start", subject)
        d = await inbox.next(15)
        await d.ack()
    assert d.event["data"] == {"amount": 5}
    assert d.event["metadata"]["schema_version"] == 2
    stored = await client.stream_forward(store, "pay-1", 0, 1, raw=True)
    assert stored[0].data == {"amt": 5}  # the stored event is never rewritten
