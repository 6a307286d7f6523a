"""Link forwarding throughput: how fast a link copies events into ``$link:<name>``.

Two numbers, both in source events per second, for a link over every stream of a store
(``{"type": "all"}``, a filter that keeps half the events, a transform that adds a field):

* **backfill**: the events are stored first, then the link starts; time until the derived
  stream holds all of them;
* **live**: the link is running; the client appends as fast as it can; time from the first
  append until the derived stream holds the last event.

``link_forwarding(url)`` needs the stream and link services on ``url`` (``bench/__main__.py``
starts them as child processes). ``python -m esdb_gater.bench.link`` runs it alone: its own nats-server,
one stream-service and one link-service process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import nats
from nats.aio.client import Client

__all__ = ["link_forwarding", "main"]


async def _call(nc: Client, subject: str, body: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
    """A request that must succeed; retried while services start (no responders, unavailable)."""
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
                await asyncio.sleep(0.1)
                continue
            raise RuntimeError(f"{subject}: {reply['error']}")
        return reply


async def _derived_version(nc: Client, store: str, name: str) -> int:
    reply = await _call(nc, f"esdb.api.{store}.stream.version", {"stream_id": f"$link:{name}"})
    return int(reply["version"])


async def _append_all(nc: Client, store: str, total: int, per_append: int, streams: int, offset: int = 0) -> None:
    """``total`` events in appends of ``per_append``, round robin over ``streams`` streams, 16 in flight."""
    sem = asyncio.Semaphore(16)

    async def one(k: int) -> None:
        events = [
            {"event_type": "Tick", "data": {"n": offset + k * per_append + j, "keep": (k * per_append + j) % 2 == 0}}
            for j in range(per_append)
        ]
        async with sem:
            await _call(nc, f"esdb.api.{store}.stream.append", {"stream_id": f"src-{k % streams}", "events": events})

    # appends to one stream stay ordered: one task per stream, each writing its own appends in turn
    async def stream_writer(s: int) -> None:
        for k in range(s, total // per_append, streams):
            await one(k)

    await asyncio.gather(*(stream_writer(s) for s in range(streams)))


async def _wait_version(nc: Client, store: str, name: str, version: int, within: float) -> float:
    """Seconds until ``$link:<name>`` reaches ``version``."""
    started = time.perf_counter()
    while await _derived_version(nc, store, name) < version:
        if time.perf_counter() - started > within:
            raise RuntimeError(f"$link:{name} did not reach version {version} within {within}s")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def link_forwarding(
    url: str, *, events: int = 20_000, per_append: int = 10, streams: int = 10, within: float = 300.0
) -> dict[str, float]:
    """``{"events", "backfill_events_per_s", "live_events_per_s", "append_events_per_s",
    "live_lag_after_last_append_s"}``: source events per second (half of them pass the filter and
    are written to the derived stream); the client's own append rate in the live phase; and how
    long the link needed after the last append."""
    nc = await nats.connect(url)
    store = "benchlink" + uuid.uuid4().hex[:6]
    try:
        await _call(nc, f"esdb.api.{store}.store.create", {})
        spec = {
            "source": {"type": "all"},
            "filter": {"field": "data.keep", "op": "=", "value": True},
            "transform": {"add_fields": {"copied": True}},
        }
        # backfill
        await _append_all(nc, store, events, per_append, streams)
        await _call(nc, f"esdb.api.{store}.link.create", {"name": "backfill", **spec})
        started = time.perf_counter()
        await _call(nc, f"esdb.api.{store}.link.start", {"name": "backfill"})
        await _wait_version(nc, store, "backfill", events // 2 - 1, within)
        backfill_s = time.perf_counter() - started
        await _call(nc, f"esdb.api.{store}.link.stop", {"name": "backfill"})
        # live
        await _call(nc, f"esdb.api.{store}.link.create", {"name": "live", "backfill": False, **spec})
        await _call(nc, f"esdb.api.{store}.link.start", {"name": "live"})
        await asyncio.sleep(1.0)  # the lease is taken and the consumer pulls
        started = time.perf_counter()
        await _append_all(nc, store, events, per_append, streams, offset=events)
        appended_s = time.perf_counter() - started
        lag_s = await _wait_version(nc, store, "live", events // 2 - 1, within)
        live_s = time.perf_counter() - started
        return {
            "events": float(events),
            "backfill_events_per_s": events / backfill_s,
            "live_events_per_s": events / live_s,
            "append_events_per_s": events / appended_s,
            "live_lag_after_last_append_s": lag_s,
        }
    finally:
        await nc.drain()


def main(argv: list[str] | None = None) -> int:
    """``python -m esdb_gater.bench.link [EVENTS]``: its own server and services; prints one markdown table."""
    from esdb_gater.bench.procs import service_child
    from esdb_gater.shared.tooling.natsserver import NatsServer

    args = sys.argv[1:] if argv is None else argv
    events = int(args[0]) if args else 20_000
    server = NatsServer().start()
    children = [service_child(server.url, service=s).start() for s in ("stream", "link")]
    try:
        result = asyncio.run(link_forwarding(server.url, events=events))
    finally:
        for child in children:
            child.cleanup()
        server.cleanup()
    print("| link forwarding | source events | events/s |")
    print("|---|---:|---:|")
    print(f"| backfill (then catch up) | {int(result['events'])} | {result['backfill_events_per_s']:.0f} |")
    print(f"| live (append while running) | {int(result['events'])} | {result['live_events_per_s']:.0f} |")
    print(
        f"\nlive: the client appended at {result['append_events_per_s']:.0f} events/s; the link finished "
        f"{result['live_lag_after_last_append_s'] * 1000:.0f} ms after the last append"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
