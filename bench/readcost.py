"""The ``readcost`` row (issue 11): a read of 100 events costs what it returns, whatever the
append sizes. Streams of ``big`` events (``--tail-events``, 100 000 by default) and of 1 000
events, written in appends of 1, 50 and 500 events, are read forward and backward at the start,
the middle (across a commit boundary) and the end; the row reports the worst p50 ratio big ÷ 1k per append size.

The streams are written straight to the log as the stream service stores appends
(``esdb.log.<store>.e.<stream>``, headers Esdb-Version/Esdb-Count, msgpack body), through
pipelined JetStream publishes: 100 000 one-event appends through the gateway would take minutes.
"""

from __future__ import annotations

import time
import uuid
from typing import Final

from nats.aio.client import Client

from esdb_gater.bench.measure import Sample, sequential
from esdb_gater.bench.ops import EVENT_TYPE, TEXT, BenchError, Errors, GatewayRead, Pipeline
from esdb_gater.bench.report import Check, Row
from esdb_gater.shared.log.eventlog import H_COUNT, H_VERSION, JSON_CT, encode_events
from esdb_gater.shared.models.stream import EventIn

__all__ = ["APPEND_SIZES", "READ_COUNT", "read_cost"]

APPEND_SIZES: Final = (1, 50, 500)
READ_COUNT: Final = 100
SMALL: Final = 1_000


def _commit(first: int, k: int) -> tuple[bytes, dict[str, str]]:
    events = [
        EventIn.model_construct(
            event_id=None,
            event_type=EVENT_TYPE,
            data={"i": first + j, "text": TEXT},
            metadata={},
            tags=None,
            data_content_type=JSON_CT,
            metadata_content_type=JSON_CT,
        )
        for j in range(k)
    ]
    body = encode_events(events, [str(uuid.uuid4()) for _ in range(k)])
    return body, {H_VERSION: str(first), H_COUNT: str(k)}


async def _populate(nc: Client, store: str, streams: list[tuple[str, int, int]]) -> float:
    """Write each (stream id, events, events per append) to the log; the seconds it took."""
    started = time.perf_counter()
    pipe = await Pipeline(nc).start()
    for sid, n, k in streams:
        subject = f"esdb.log.{store}.e.{sid}"
        for first in range(0, n, k):
            body, headers = _commit(first, min(k, n - first))
            await pipe.publish(subject, body, headers)
    await pipe.finish(within=300)
    return time.perf_counter() - started


def _reads(n: int) -> list[tuple[str, str, int, list[int]]]:
    """(label, direction, start version, the versions expected) for a stream of ``n`` events."""
    c = READ_COUNT
    mid = n // 2 - 37  # not on a commit boundary: the read spans two commits of any size here
    return [
        ("fwd start", "forward", 0, list(range(0, c))),
        ("fwd mid", "forward", mid, list(range(mid, mid + c))),
        ("fwd end", "forward", n - c, list(range(n - c, n))),
        ("bwd start", "backward", c - 1, list(range(c - 1, -1, -1))),
        ("bwd mid", "backward", mid + c - 1, list(range(mid + c - 1, mid - 1, -1))),
        ("bwd end", "backward", -1, list(range(n - 1, n - 1 - c, -1))),
    ]


async def _measure(nc: Client, store: str, sid: str, n: int, window: float, errs: Errors) -> list[tuple[str, Sample]]:
    out = []
    for label, direction, start, expected in _reads(n):
        body = {"stream_id": sid, "start_version": start, "count": READ_COUNT}
        op = GatewayRead(nc, f"esdb.api.{store}.stream.{direction}", body, READ_COUNT, errs)
        sample = await sequential(op, window, warmup=5, events_per_op=READ_COUNT, errors=errs)
        got = [e["version"] for e in op.last]
        if got != expected:
            raise BenchError(f"{sid} {label}: versions {got[:3]}…{got[-3:]}, expected {expected[0]}…{expected[-1]}")
        out.append((label, sample))
    return out


async def read_cost(
    nc: Client, store: str, big: int, window: float, errs: Errors
) -> tuple[list[Row], list[Check], float]:
    """The rows, the checks (one per append size) and the seconds spent writing the streams."""
    streams = [(f"rc-{k}-big", big, k) for k in APPEND_SIZES] + [(f"rc-{k}-1k", SMALL, k) for k in APPEND_SIZES]
    took = await _populate(nc, store, streams)
    big_label = f"{big // 1000}k" if big % 1000 == 0 else f"{big:,}"
    sc = f"read {READ_COUNT} events, {big_label}-event stream ÷ 1k-event stream (fwd/bwd, start/mid/end)"
    rows: list[Row] = []
    checks: list[Check] = []
    for k in APPEND_SIZES:
        small = await _measure(nc, store, f"rc-{k}-1k", SMALL, window, errs)
        large = await _measure(nc, store, f"rc-{k}-big", big, window, errs)
        ratios = [(lb.p50 / sb.p50, label, lb, sb) for (label, sb), (_, lb) in zip(small, large, strict=True)]
        worst, worst_label, worst_big, worst_small = max(ratios, key=lambda r: r[0])
        detail = ", ".join(f"{label} {lb.p50:.2f}/{sb.p50:.2f}" for _, label, lb, sb in ratios)
        c = Check(f"read {READ_COUNT} in {big_label}, appends of {k} (worst p50 ratio vs 1k)", worst, "<=", 2.0)
        checks.append(c)
        rows += [
            Row(sc, f"gateway, appends of {k}, 1k stream ({worst_label})", worst_small),
            Row(
                sc,
                f"gateway, appends of {k}, {big_label} stream ({worst_label})",
                worst_big,
                f"{c.fmt()} (worst p50 ÷ 1k)",
                c.target_cell(),
                f"p50 ms big/1k: {detail}",
            ),
        ]
    return rows, checks, took
