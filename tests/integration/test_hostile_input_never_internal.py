"""Hostile input to the link, scavenger, causation and health ops: every reply is a success or a
structured error, never ``internal``, and never a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)

OPS = {
    "link": ["create", "start", "stop", "delete", "get", "list", "info"],
    "scavenger": [
        "scavenge",
        "scavenge_matching",
        "dry_run",
        "archive_read",
        "policy_set",
        "policy_get",
        "policy_list",
        "policy_delete",
    ],
    "causation": ["effects", "cause", "chain", "correlated", "graph"],
    "health": ["quick"],
    "memory": ["level", "stats"],
}

BODIES: list[Any] = [
    [],
    "text",
    None,
    {"name": 10**30, "stream_id": 10**30, "event_id": 10**30},
    {"name": "x" * 10_000, "pattern": "*" * 10_000, "event_id": "e" * 10_000, "archive_key": "k" * 10_000},
    {"name": "ok", "source": {"type": "all"}, "filter": {"field": "data." + "a." * 300 + "b", "op": "=", "value": 1}},
    {"name": "ok", "source": {"type": "all"}, "transform": {"add_fields": {"big": 10**30}}},
    {"stream_id": "s", "before": 10**30},
    {"stream_id": "s", "max_age": 1e300},
    {"stream_id": "s", "keep_versions": 1, "require_snapshot": "yes"},
    {"pattern": "a*", "max_age": -1},
    {"archive_key": "../../etc/passwd"},
    {"event_id": "\u0000\ud800x"},
    {"correlation_id": "c", "format": "dot", "max_nodes": 10**9},
    {"id": "x", "event_id": "y"},
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
async def test_no_op_answers_internal(wire: Wire, store: str, body: Any) -> None:
    await wire.call(store, "append", {"stream_id": "s", "events": [{"event_type": "E", "data": {}}]})
    data = json.dumps(body).encode()
    for service, ops in OPS.items():
        for op in ops:
            reply = await wire.raw(f"esdb.api.{store}.{service}.{op}", data, wait=10)
            if reply.is_error:
                code = reply.body["error"]["code"]
                assert code != "internal", (service, op, reply.body)
                reply.error(code)  # the envelope and headers are well formed
    check = await wire.raw("esdb.api._.health.check", data, wait=10)
    if check.is_error:
        check.error("invalid_request")


@pytest.mark.parametrize(
    "subject",
    ["esdb.api.{store}.stream.append", "esdb.api._.channel.publish", "esdb.api.{store}.snapshot.record"],
)
async def test_raw_surrogate_bytes_are_invalid_json_not_internal(wire: Wire, store: str, subject: str) -> None:
    """UTF-8 bytes of a lone surrogate (ED A0 80) inside a string: json.loads lets them through
    as a surrogate that failed only when stored or signed (``internal``); now ``invalid_request``."""
    body = (
        b'{"stream_id":"s","expected_version":-2,"events":[{"event_type":"E","data":{"a":"x\xed\xa0\x80"}}],'
        b'"channel":"events","topic":"t","payload":{"a":"x\xed\xa0\x80"},"version":0,"data":{"a":"x\xed\xa0\x80"}}'
    )
    reply = await wire.raw(subject.format(store=store), body, wait=10)
    reply.error("invalid_request")
