"""Run by test_otlp_export.py in its own process (OpenTelemetry providers are per process):
one traced append, one error, one request whose retries run out; prints the append's trace id."""

from __future__ import annotations

import asyncio
import sys

from opentelemetry import trace

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.client.retry import RetryConfig
from esdb_gater.shared.core.errors import RetriesExhaustedError, StreamNotFoundError
from esdb_gater.shared.core.telemetry import setup_telemetry, shutdown_telemetry
from esdb_gater.shared.log import jetstream


async def main(url: str) -> None:
    assert setup_telemetry("otlp-test-client")
    nc = await jetstream.connect(url)
    client = GaterClient(nc, retry=RetryConfig(base_delay_ms=10, max_delay_ms=20, max_retries=2))
    tracer = trace.get_tracer("otlp-test")
    with tracer.start_as_current_span("caller") as caller:
        await client.append_events("otel", "traced", [{"event_type": "Traced", "data": {"x": 1}}])
        trace_id = format(caller.get_span_context().trace_id, "032x")
    try:
        await client.stream_forward("otel", "no-such-stream", 0, 10)
    except StreamNotFoundError:
        failed = True
    else:
        failed = False
    assert failed, "expected stream_not_found"
    try:
        await client.request("otel", "nobody", "home", {})
    except RetriesExhaustedError:
        exhausted = True
    else:
        exhausted = False
    assert exhausted, "expected retries_exhausted"
    await nc.drain()
    shutdown_telemetry()
    print(trace_id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
