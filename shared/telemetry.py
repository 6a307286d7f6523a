"""OpenTelemetry set-up and the two instruments every request feeds.

Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) nothing is exported: the
OpenTelemetry API's no-op providers make spans and metrics nearly free. With it, traces and
metrics leave over OTLP/HTTP. ``traceparent`` travels in NATS headers (W3C propagation), so a
request's span continues the caller's trace.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject

__all__ = ["extract_context", "inject_context", "instruments", "setup_telemetry", "tracer"]

_configured = False


def setup_telemetry(service_name: str) -> bool:
    """Install SDK providers with OTLP/HTTP exporters when an endpoint is configured."""
    global _configured
    if _configured:
        return True
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tp)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _configured = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer("esdb-gater")


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter("esdb-gater")
        self.duration = meter.create_histogram(
            "esdb.request.duration", unit="ms", description="request handling time per service op"
        )
        self.errors = meter.create_counter("esdb.request.errors", description="error replies by code")
        self.requests = meter.create_counter("esdb.request.count", description="requests handled")


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def extract_context(headers: dict[str, str] | None) -> Any:
    return extract(headers or {})


def inject_context(headers: dict[str, str]) -> dict[str, str]:
    inject(headers)
    return headers
