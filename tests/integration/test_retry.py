"""The client's automatic retry against a real server: a request to a service that is not up
yet succeeds once it is; an append retried after a lost reply is stored once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.client.retry import RetryConfig
from esdb_gater.shared.core.errors import RetriesExhaustedError, UnavailableError
from esdb_gater.shared.core.telemetry import RETRY_ATTEMPT, attach, detach

FAST = RetryConfig(base_delay_ms=20, max_delay_ms=200, max_retries=20)


async def test_request_is_retried_until_a_service_answers(nc: Client, store: str) -> None:
    client = GaterClient(nc, retry=FAST)
    retried = asyncio.Event()

    def on_retry(event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any], cfg: Any) -> None:
        if metadata.get("store_id") == store and measurements["attempt"] >= 2:
            retried.set()

    async def late_responder() -> None:
        await asyncio.wait_for(retried.wait(), 10)  # the service comes up once the client has retried twice

        async def answer(msg: Msg) -> None:
            await msg.respond(json.dumps({"answered": True}).encode())

        await nc.subscribe(f"esdb.api.{store}.late.op", cb=answer)

    assert attach(f"retry-{store}", [RETRY_ATTEMPT], on_retry)
    try:
        task = asyncio.create_task(late_responder())
        assert await client.request(store, "late", "op", {}) == {"answered": True}
        await task
    finally:
        detach(f"retry-{store}")


async def test_retries_run_out_with_the_last_error(nc: Client, store: str) -> None:
    client = GaterClient(nc, retry=RetryConfig(base_delay_ms=10, max_delay_ms=20, max_retries=2))
    try:
        await client.request(store, "nobody", "home", {})
    except RetriesExhaustedError as exc:
        assert isinstance(exc.last_error, UnavailableError)
    else:
        raise AssertionError("expected RetriesExhaustedError")
    no_retry = GaterClient(nc, retry=None)
    try:
        await no_retry.request(store, "nobody", "home", {})
    except UnavailableError:
        pass
    else:
        raise AssertionError("expected UnavailableError at once")


async def test_client_gives_events_ids_so_a_resent_append_is_stored_once(
    client: GaterClient, store: str, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a retry after a lost reply does: the same body (with the ids the client added) is
    sent again and answered with the original result."""
    sent: list[dict[str, Any]] = []
    original = client._request_once

    async def spy(st: str, service: str, op: str, body: dict[str, Any]) -> Any:
        sent.append(body)
        return await original(st, service, op, body)

    monkeypatch.setattr(client, "_request_once", spy)
    first = await client.append_events(store, stream_id, [{"event_type": "A"}, {"event_type": "B"}])
    events = sent[0]["events"]
    assert isinstance(events, list) and all(e["event_id"] for e in events)
    again = await original(store, "stream", "append", sent[0])
    assert again == first.model_dump()
    assert await client.get_version(store, stream_id) == 1
