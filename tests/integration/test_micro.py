"""NATS micro protocol (ADR-32): the stream service answers ``$SRV.PING|INFO|STATS`` so
``nats micro ls`` lists it, with its endpoints in the ``esdb-stream`` queue group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from esdb_gater.shared.runtime.runner import Running
from tests.conftest import Wire

ROOT = Path(__file__).resolve().parents[2]
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
OPS = ["append", "read", "forward", "backward", "version", "exists", "list", "delete",
       "read_until", "read_range", "version_at", "append_multi", "read_all", "checkpoint"]  # fmt: skip
STORE_OPS = ["create", "info", "reindex"]
SUBJECTS = {f"esdb.api.*.stream.{op}" for op in OPS} | {f"esdb.api.*.store.{op}" for op in STORE_OPS}
# services-only writes of $-streams (docs/adr/0016-reserved-streams-and-quotas.md)
SUBJECTS |= {"esdb.internal.*.stream.append", "esdb.internal.*.stream.delete", "esdb.internal.*.store.create"}


async def _gather(nc: Client, subject: str, want_id: str | None = None, window: float = 0.5) -> list[dict[str, Any]]:
    """All replies to one request within ``window`` seconds (stops early once ``want_id`` answered)."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    seen = asyncio.Event()

    async def on_reply(msg: Any) -> None:
        body = json.loads(msg.data)
        replies.append(body)
        if want_id is not None and body.get("id") == want_id:
            seen.set()

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subject, b"", reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), window)
    finally:
        await sub.unsubscribe()
    return replies


def _instance_id(services: Running) -> str:
    return services.services[0].service.id


async def test_ping_by_name_and_all(services: Running, nc: Client) -> None:
    sid = _instance_id(services)
    for subject in ("$SRV.PING.esdb-stream", "$SRV.PING"):
        replies = await _gather(nc, subject, want_id=sid)
        mine = [r for r in replies if r.get("id") == sid]
        assert len(mine) == 1, subject
        ping = mine[0]
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert ping["name"] == "esdb-stream"
        assert SEMVER.match(ping["version"])
    # only esdb-stream answers the name-scoped ping
    assert {r["name"] for r in await _gather(nc, "$SRV.PING.esdb-stream", window=0.2)} == {"esdb-stream"}


async def test_info_lists_every_endpoint_in_the_queue_group(services: Running, nc: Client) -> None:
    sid = _instance_id(services)
    msg = await nc.request(f"$SRV.INFO.esdb-stream.{sid}", b"", timeout=2)
    info = json.loads(msg.data)
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert (info["name"], info["id"]) == ("esdb-stream", sid)
    assert SEMVER.match(info["version"])
    assert info["description"]
    assert info["metadata"] == {"esdb.service": "stream", "esdb.prefix": "esdb"}
    endpoints = info["endpoints"]
    assert {ep["subject"] for ep in endpoints} == SUBJECTS
    assert len(endpoints) == len(SUBJECTS)
    for ep in endpoints:
        assert ep["queue_group"] == "esdb-stream", ep
        assert ep["metadata"]["description"], ep
        # each endpoint points at its schemas, files of the repository (tools/gen_schemas.py)
        token, op = ep["subject"].split(".")[-2:]
        assert ep["metadata"]["request_schema"] == f"docs/api/schemas/{token}.{op}.request.json", ep
        assert ep["metadata"]["response_schema"] == f"docs/api/schemas/{token}.{op}.reply.json", ep
        for key in ("request_schema", "response_schema", "error_schema"):
            assert (ROOT / ep["metadata"][key]).is_file(), ep
    names = {ep["subject"]: ep["name"] for ep in endpoints}
    assert names["esdb.api.*.stream.append"] == "append"
    assert names["esdb.api.*.store.create"] == "store_create"
    assert names["esdb.internal.*.stream.append"] == "internal_append"
    # the name-scoped INFO reaches the same instance
    replies = await _gather(nc, "$SRV.INFO.esdb-stream", want_id=sid)
    assert any(r["id"] == sid and r["endpoints"] == endpoints for r in replies)


async def _endpoint_stats(nc: Client, sid: str, name: str) -> dict[str, Any]:
    msg = await nc.request(f"$SRV.STATS.esdb-stream.{sid}", b"", timeout=2)
    stats = json.loads(msg.data)
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert stats["name"] == "esdb-stream"
    [ep] = [e for e in stats["endpoints"] if e["name"] == name]
    assert ep["queue_group"] == "esdb-stream"
    return ep  # type: ignore[no-any-return]


async def _stats_after(nc: Client, sid: str, name: str, key: str, at_least: int) -> dict[str, Any]:
    """Stats are updated when the handler task finishes, just after the reply: poll briefly."""
    for _ in range(100):
        ep = await _endpoint_stats(nc, sid, name)
        if ep[key] >= at_least:
            return ep
        await asyncio.sleep(0.01)
    return ep


async def test_stats_count_requests_and_errors(services: Running, nc: Client, wire: Wire, store: str) -> None:
    sid = _instance_id(services)
    before = await _endpoint_stats(nc, sid, "read")

    (await wire.call(store, "read", {"stream_id": "absent"})).error("stream_not_found")
    ep = await _stats_after(nc, sid, "read", "num_errors", before["num_errors"] + 1)
    assert ep["num_errors"] == before["num_errors"] + 1
    assert ep["num_requests"] == before["num_requests"] + 1
    assert "404" in ep["last_error"] or "stream_not_found" in ep["last_error"]

    (await wire.call(store, "read", {"stream_id": "absent", "count": -1})).error("invalid_request")
    ep = await _stats_after(nc, sid, "read", "num_errors", before["num_errors"] + 2)
    assert ep["num_errors"] == before["num_errors"] + 2
    assert "400" in ep["last_error"] or "invalid_request" in ep["last_error"]

    # a success counts as a request, not an error
    (await wire.call(store, "append", {"stream_id": "present", "events": [{"event_type": "A"}]})).ok()
    (await wire.call(store, "read", {"stream_id": "present"})).ok()
    ep = await _stats_after(nc, sid, "read", "num_requests", before["num_requests"] + 3)
    assert ep["num_requests"] == before["num_requests"] + 3
    assert ep["num_errors"] == before["num_errors"] + 2
    assert ep["processing_time"] > 0
    assert ep["average_processing_time"] > 0
