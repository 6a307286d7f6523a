"""Read throughput with automatic upcasting: a forward read of 1000 events whose type has a
3-step upcaster chain (rename, split, add), against the same read of events whose type has no
schema, and the chained stream read with ``raw: true``, in one run (docs/api/schema.md).

Needs the stream and the schema service. ``measure_upcast_reads`` populates two streams through
the gateway, registers the chain through ``schema.register``, then times each read for
``duration`` seconds and checks that the chained events really came back upcast.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Final

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.bench.measure import Sample, sequential
from esdb_gater.bench.ops import BenchError, Errors, GatewayRead
from esdb_gater.bench.report import Row

__all__ = ["UpcastResult", "measure_upcast_reads"]

EVENTS: Final = 1000
PER_APPEND: Final = 100
PLAIN_TYPE: Final = "BenchPlain"
CHAIN_TYPE: Final = "BenchChained"
TEXT: Final = "x" * 120
CHAIN: Final = {
    "version": 2,
    "description": "bench: a 3-step chain from version 1",
    "upcast_from": {
        "1": [
            {"op": "rename", "from": "amt", "to": "amount"},
            {"op": "split", "path": "who", "separator": " ", "into": ["payer.first", "payer.last"]},
            {"op": "add", "path": "currency", "value": "EUR"},
        ]
    },
}


@dataclass
class UpcastResult:
    events: int
    plain: Sample
    chained: Sample
    raw: Sample

    @property
    def ratio(self) -> float:
        """Chained read throughput relative to the read without a schema."""
        return self.chained.ops_s / self.plain.ops_s if self.plain.ops_s else float("nan")

    def rows(self) -> list[Row]:
        sc = f"forward read of {self.events} events, upcasting"
        return [
            Row(sc, "gateway, type without a schema", self.plain),
            Row(
                sc,
                "gateway, 3-step upcaster chain (v1 → v2)",
                self.chained,
                f"{self.ratio:.2f}",
                "",
                "ratio: chained / without a schema; rename + split + add per event",
            ),
            Row(sc, "gateway, same stream with raw: true", self.raw),
        ]


def _event(event_type: str, i: int) -> dict[str, Any]:
    return {"event_type": event_type, "data": {"i": i, "amt": i % 100, "who": "Ada Lovelace", "text": TEXT}}


async def _call(nc: Client, subject: str, body: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
    """One request, retried while the service is not there yet; raises BenchError on an error."""
    deadline = time.monotonic() + within
    while True:
        try:
            msg = await nc.request(subject, json.dumps(body).encode(), timeout=5)
            break
        except (NoRespondersError, NatsTimeoutError):
            if time.monotonic() > deadline:
                raise BenchError(f"no service answers {subject}") from None
            await asyncio.sleep(0.2)
    reply: dict[str, Any] = json.loads(msg.data)
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        raise BenchError(f"{subject}: {reply}")
    return reply


async def _populate(nc: Client, store: str, stream_id: str, event_type: str, n: int) -> None:
    for start in range(0, n, PER_APPEND):
        events = [_event(event_type, i) for i in range(start, min(n, start + PER_APPEND))]
        await _call(nc, f"esdb.api.{store}.stream.append", {"stream_id": stream_id, "events": events})


async def measure_upcast_reads(
    nc: Client, store: str, duration: float, *, events: int = EVENTS, errors: Errors | None = None
) -> UpcastResult:
    """Populate, register the chain, and time the three reads (``duration`` seconds each)."""
    errs = errors or Errors()
    plain_id, chain_id = f"upcast-plain-{events}", f"upcast-chain-{events}"
    await _populate(nc, store, plain_id, PLAIN_TYPE, events)
    await _populate(nc, store, chain_id, CHAIN_TYPE, events)
    await _call(nc, f"esdb.api.{store}.schema.register", {"event_type": CHAIN_TYPE, "schema": CHAIN}, within=30)
    subject = f"esdb.api.{store}.stream.forward"
    body = {"start_version": 0, "count": events}
    plain = GatewayRead(nc, subject, {"stream_id": plain_id, **body}, events, errs)
    chained = GatewayRead(nc, subject, {"stream_id": chain_id, **body}, events, errs)
    raw = GatewayRead(nc, subject, {"stream_id": chain_id, "raw": True, **body}, events, errs)
    s_plain = await sequential(plain, duration, warmup=3, events_per_op=events, errors=errs)
    s_chained = await sequential(chained, duration, warmup=3, events_per_op=events, errors=errs)
    s_raw = await sequential(raw, duration, warmup=3, events_per_op=events, errors=errs)
    last = chained.last[-1] if chained.last else {}
    want = {"i": events - 1, "amount": (events - 1) % 100, "payer": {"first": "Ada", "last": "Lovelace"}}
    if last.get("metadata") != {"schema_version": 2} or any(last.get("data", {}).get(k) != v for k, v in want.items()):
        raise BenchError(f"the chained read did not come back upcast: {str(last)[:300]}")
    if raw.last and raw.last[-1].get("metadata") != {}:
        raise BenchError("the raw read came back upcast")
    return UpcastResult(events, s_plain, s_chained, s_raw)
