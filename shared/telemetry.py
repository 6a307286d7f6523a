"""OpenTelemetry set-up and the two instruments every request feeds.

Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) nothing is exported: the
OpenTelemetry API's no-op providers make spans and metrics nearly free. With it, traces and
metrics leave over OTLP/HTTP. ``traceparent`` travels in NATS headers (W3C propagation), so a
request's span continues the caller's trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject

__all__ = [
    "attach",
    "client_span",
    "detach",
    "emit",
    "extract_context",
    "inject_context",
    "instruments",
    "setup_telemetry",
    "shutdown_telemetry",
    "tracer",
]

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


def shutdown_telemetry() -> None:
    """Flush and stop the SDK providers (spans and metrics still buffered are exported)."""
    global _configured
    if not _configured:
        return
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
    _configured = False


def client_span(name: str, attributes: dict[str, Any]) -> Any:
    """A CLIENT span around an outgoing request, or a null context while tracing is off."""
    t = tracer()
    if t is None:
        return contextlib.nullcontext()
    return t.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)


_tracer: trace.Tracer | None = None
_tracer_provider: object | None = None


def tracer() -> trace.Tracer | None:
    """The gateway's tracer, or None while no SDK tracer provider is installed (then a span
    would be a no-op anyway, and skipping it saves ~10% of a request's CPU)."""
    global _tracer, _tracer_provider
    provider = trace.get_tracer_provider()
    if provider is not _tracer_provider:
        _tracer_provider = provider
        recording = type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")
        _tracer = trace.get_tracer("esdb-gater") if recording else None
    return _tracer


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter("esdb-gater")
        self.duration = meter.create_histogram(
            "esdb.request.duration", unit="ms", description="request handling time per service op"
        )
        self.errors = meter.create_counter("esdb.request.errors", description="error replies by code")
        self.requests = meter.create_counter("esdb.request.count", description="requests handled")
        self.events = meter.create_counter(
            "esdb.events", description="catalogue events: retry attempt/exhausted, request error, ..."
        )
        self.dropped = meter.create_counter(
            "esdb.requests.dropped",
            description="requests and deliveries not answered/sent, by reason (reply_subject, target_subject)",
        )
        self.corrupt = meter.create_counter(
            "esdb.log.corrupt_entries",
            description="messages on a log subject that are not commits (skipped by readers), by reader",
        )


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


# --- in-process listeners (the seed's telemetry:attach/detach) -----------------------------------

Event = tuple[str, ...]
Handler = Callable[[Event, dict[str, Any], dict[str, Any]], None]
_handlers: dict[str, Handler] = {}
_log = logging.getLogger("esdb.telemetry")


def attach(handler_id: str, handler: Handler) -> bool:
    """Call ``handler(event, measurements, metadata)`` for every emitted event; False when the
    id is taken (the seed's ``{error, already_exists}``)."""
    if handler_id in _handlers:
        return False
    _handlers[handler_id] = handler
    return True


def detach(handler_id: str) -> bool:
    """Remove a handler; False when there was none (``{error, not_found}``)."""
    return _handlers.pop(handler_id, None) is not None


def emit(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Tell attached handlers, and count the event as an OpenTelemetry metric
    (``esdb.events`` with the event name as attribute). A failing handler is logged and skipped."""
    instruments().events.add(1, {"event": ".".join(event), **{k: str(v) for k, v in metadata.items()}})
    for hid, handler in list(_handlers.items()):
        try:
            handler(event, measurements, metadata)
        except Exception:
            _log.exception("telemetry handler %s failed", hid)
