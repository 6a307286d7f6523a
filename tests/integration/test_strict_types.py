"""Request values have the type the published JSON Schema gives them (issue 14): the models are
strict, so ``"count": "10"`` is ``invalid_request`` (naming the field) instead of being coerced,
over JSON and msgpack. An integer still stands for a number (``max_age_s: 3600``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from esdb_gater.shared.client import GaterClient
from tests.conftest import Wire


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("op", "field", "value"),
    [
        ("read", "count", "10"),  # the case
        ("read", "count", 10.5),
        ("read", "count", True),
        ("read", "start_version", "0"),
        ("read", "raw", 1),
        ("read", "raw", "true"),
        ("version", "stream_id", 7),
    ],
)
async def test_lax_values_are_invalid_requests(
    wire: Wire, client: GaterClient, store: str, codec: str, op: str, field: str, value: Any
) -> None:
    stream = "strict-" + uuid.uuid4().hex[:8]
    await client.append_events(store, stream, [{"event_type": "E", "data": {}}])
    body = {"stream_id": stream, field: value}
    details = (await wire.call(store, op, body, codec=codec)).error("invalid_request")
    assert details.get("field") == field, details


async def test_proper_types_still_pass(wire: Wire, client: GaterClient, store: str) -> None:
    stream = "strict-" + uuid.uuid4().hex[:8]
    await client.append_events(store, stream, [{"event_type": "E", "data": {}}])
    got = (await wire.call(store, "read", {"stream_id": stream, "count": 10, "raw": True})).ok()
    assert len(got["events"]) == 1
    got = (await wire.call(store, "read", {"stream_id": stream, "count": 10}, codec="msgpack")).ok()
    assert len(got["events"]) == 1
    # an integer where the schema says number (float fields)
    created = await wire.call(
        "strict" + uuid.uuid4().hex[:8], "create", {"max_age_s": 3600, "duplicate_window_s": 60}, service="store"
    )
    assert created.ok()
