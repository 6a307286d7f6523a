"""Every request gets a server span that continues the caller's ``traceparent``, and feeds the
duration / request / error metrics."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from esdb_gater.shared.runtime.runner import Running

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def telemetry() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return exporter, reader


async def test_request_span_continues_traceparent_and_records_metrics(
    telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader], services: Running, nc: Client, store: str
) -> None:
    exporter, reader = telemetry
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
    await nc.request(f"esdb.api.{store}.stream.version", json.dumps({"stream_id": "x"}).encode(), headers=headers)
    bad = await nc.request(f"esdb.api.{store}.stream.version", b"{", headers=headers)
    assert bad.headers is not None and bad.headers["Nats-Service-Error-Code"] == "400"

    spans = [s for s in exporter.get_finished_spans() if s.name == "stream.version"]
    assert len(spans) >= 2
    for span in spans[-2:]:
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN
        assert span.kind == trace.SpanKind.SERVER
        assert span.attributes is not None and span.attributes["esdb.store"] == store
    assert spans[-1].attributes is not None and spans[-1].attributes["esdb.error.code"] == "invalid_request"

    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"esdb.request.duration", "esdb.request.count", "esdb.request.errors"} <= names.keys()
    errors = names["esdb.request.errors"].data.data_points
    assert any(
        isinstance(p, NumberDataPoint) and (p.attributes or {}).get("code") == "invalid_request" and p.value >= 1
        for p in errors
    )
