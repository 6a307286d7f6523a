"""Causation lookups against store size: a ``chain`` query in a store of 1k events against the
same query in a store of 100k events (issue 7: the second may cost at most twice the first).

Each store gets the same causation chain of ``depth`` events across several streams, plus filler
events up to the store's size; every filler event has a causation id and a correlation id too, so
the indexes grow with the store, not only the log. Once the causation index has caught up, the
client asks for the chain of the last event of the chain ``lookups`` times, one request at a
time, and reports the median and p99 latency per store size and their ratio.

``chain_lookup(url)`` needs the stream and causation services on ``url``; ``python -m
esdb_gater.bench.causation`` runs it alone (its own nats-server, one process of each service).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import nats
from nats.aio.client import Client

__all__ = ["chain_lookup", "main"]

PER_APPEND = 1000


async def _call(nc: Client, subject: str, body: dict[str, Any], within: float = 120.0) -> dict[str, Any]:
    """A request that must succeed; retried while services start or the index catches up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            msg = await nc.request(subject, json.dumps(body).encode(), timeout=10.0)
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        reply: dict[str, Any] = json.loads(msg.data)
        if msg.headers and "Nats-Service-Error-Code" in msg.headers:
            if reply["error"]["retryable"] and loop.time() < deadline:
                await asyncio.sleep(0.2)
                continue
            raise RuntimeError(f"{subject}: {reply['error']}")
        return reply


async def _fill(nc: Client, store: str, size: int, depth: int) -> str:
    """The chain (``depth`` events over ``depth`` streams) in the middle of ``size`` events; returns
    the id of the chain's last event."""
    filler = size - depth
    half = filler // 2

    async def fillers(n: int, tag: str) -> None:
        for start in range(0, n, PER_APPEND):
            count = min(PER_APPEND, n - start)
            events = [
                {
                    "event_id": f"{tag}-{start + i}",
                    "event_type": "Filler",
                    "data": {"i": start + i},
                    "metadata": {
                        "causation_id": f"{tag}-{max(0, start + i - 1)}",
                        "correlation_id": f"{tag}-c{i % 50}",
                    },
                }
                for i in range(count)
            ]
            await _call(
                nc,
                f"esdb.api.{store}.stream.append",
                {"stream_id": f"fill-{start // PER_APPEND % 20}", "events": events},
            )

    await fillers(half, "a")
    cause = None
    last = ""
    for k in range(depth):
        last = f"chain-{k}"
        meta: dict[str, Any] = {"correlation_id": "the-chain"}
        if cause is not None:
            meta["causation_id"] = cause
        await _call(
            nc,
            f"esdb.api.{store}.stream.append",
            {
                "stream_id": f"step-{k}",
                "events": [{"event_id": last, "event_type": "Step", "data": {}, "metadata": meta}],
            },
        )
        cause = last
    await fillers(filler - half, "b")
    return last


async def _measure(nc: Client, store: str, last: str, lookups: int, depth: int) -> tuple[float, float]:
    subject = f"esdb.api.{store}.causation.chain"
    body = {"event_id": last}
    reply = await _call(nc, subject, body, within=600.0)  # waits out the index catching up
    if len(reply["events"]) != depth:
        raise RuntimeError(f"chain of {len(reply['events'])} events, expected {depth}")
    for _ in range(20):  # warm up
        await _call(nc, subject, body)
    times = []
    for _ in range(lookups):
        started = time.perf_counter()
        await _call(nc, subject, body)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


async def chain_lookup(
    url: str, *, sizes: tuple[int, ...] = (1_000, 100_000), depth: int = 10, lookups: int = 300
) -> dict[str, Any]:
    """``{"depth", "rows": [{"events", "p50_ms", "p99_ms"}, ...], "ratio_p50"}``: ratio of the
    largest store's median to the smallest's (target ≤ 2)."""
    nc = await nats.connect(url)
    rows: list[dict[str, float]] = []
    try:
        for size in sizes:
            store = f"benchcause{size}x{uuid.uuid4().hex[:4]}"
            await _call(nc, f"esdb.api.{store}.store.create", {})
            last = await _fill(nc, store, size, depth)
            p50, p99 = await _measure(nc, store, last, lookups, depth)
            rows.append({"events": float(size), "p50_ms": p50, "p99_ms": p99})
    finally:
        await nc.drain()
    return {"depth": depth, "rows": rows, "ratio_p50": rows[-1]["p50_ms"] / rows[0]["p50_ms"]}


def main(argv: list[str] | None = None) -> int:
    """``python -m esdb_gater.bench.causation [SMALL LARGE]``: its own server and services; prints a table."""
    from esdb_gater.bench.procs import service_child
    from esdb_gater.shared.tooling.natsserver import NatsServer

    args = sys.argv[1:] if argv is None else argv
    sizes = (int(args[0]), int(args[1])) if len(args) >= 2 else (1_000, 100_000)
    server = NatsServer().start()
    children = [service_child(server.url, service=s).start() for s in ("stream", "causation")]
    try:
        result = asyncio.run(chain_lookup(server.url, sizes=sizes))
    finally:
        for child in children:
            child.cleanup()
        server.cleanup()
    print(f"| causation chain (depth {result['depth']}) | store events | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for row in result["rows"]:
        print(f"| chain lookup | {int(row['events'])} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    ok = "✓" if result["ratio_p50"] <= 2 else "✗"
    print(f"\nlargest ÷ smallest (p50): {result['ratio_p50']:.2f} (target ≤ 2 {ok})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
