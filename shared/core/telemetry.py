"""OpenTelemetry set-up, the request metrics, and the seed's event catalogue (docs/telemetry.md).

Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) nothing is exported: the
OpenTelemetry API's no-op providers make spans and metrics nearly free. With it, traces and
metrics leave over OTLP/HTTP. ``traceparent`` travels in NATS headers (W3C propagation), so a
request's span continues the caller's trace.

The catalogue (``esdb_gater.request.start`` …) reaches in-process handlers attached with
``attach``; when OpenTelemetry is configured, each event also counts in ``esdb.events`` and is
added to the current span. With neither, ``active()`` is False and hot paths build no event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, overload

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_api
from opentelemetry.propagate import extract, inject

__all__ = [
    "CATALOGUE",
    "CHANNEL_BROADCAST",
    "DEFAULT_HANDLER_ID",
    "NODE_DOWN",
    "NODE_UP",
    "REQUEST_ERROR",
    "REQUEST_START",
    "REQUEST_STOP",
    "RETRY_ATTEMPT",
    "RETRY_EXHAUSTED",
    "WORKER_LOOKUP",
    "WORKER_REGISTERED",
    "WORKER_UNREGISTERED",
    "active",
    "attach",
    "attach_default_handler",
    "attach_handlers",
    "attached",
    "client_span",
    "default_handler",
    "detach",
    "detach_default_handler",
    "emit",
    "extract_context",
    "format_event",
    "inject_context",
    "instruments",
    "metering",
    "setup_telemetry",
    "shutdown_telemetry",
    "system_time_ms",
    "tracer",
    "watch_connection",
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


_UNKNOWN: Final = object()
# providers named by environment variables are loaded by the API's getters on first use
_ENV_PROVIDERS: Final = any(k in os.environ for k in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER"))


def _installed(module: Any, attr: str, getter: Callable[[], object]) -> object:
    """The provider set globally (None while none is). Reads the API's module global: the public
    getters look at ``os.environ`` on every call, about 1 µs, which a per-request check can't
    afford; they are used when the global is gone (another API version) or env-configured."""
    provider = getattr(module, attr, _UNKNOWN)
    if provider is _UNKNOWN or (provider is None and _ENV_PROVIDERS):
        return getter()
    return provider


_NOOP_PROVIDERS: Final = ("ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider")
_tracer: trace.Tracer | None = None
_tracer_provider: object | None = None


def tracer() -> trace.Tracer | None:
    """The gateway's tracer, or None while no SDK tracer provider is installed (then a span
    would be a no-op anyway, and skipping it saves ~10% of a request's CPU)."""
    global _tracer, _tracer_provider
    provider = _installed(trace, "_TRACER_PROVIDER", trace.get_tracer_provider)
    if provider is not _tracer_provider:
        _tracer_provider = provider
        recording = provider is not None and type(provider).__name__ not in _NOOP_PROVIDERS
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
        self.events = meter.create_counter("esdb.events", description="catalogue events by name (docs/telemetry.md)")
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


# --- the seed's event catalogue and in-process listeners (esdb_gater_telemetry) -------------------
# docs/telemetry.md lists every event, when it is emitted, its measurements and metadata.

Event = tuple[str, ...]
Handler = Callable[[Event, dict[str, Any], dict[str, Any]], None]  # attach(id, handler): every event
HandlerFn = Callable[[Event, dict[str, Any], dict[str, Any], Any], None]  # attach(id, events, fn, config)

REQUEST_START: Final[Event] = ("esdb_gater", "request", "start")
REQUEST_STOP: Final[Event] = ("esdb_gater", "request", "stop")
REQUEST_ERROR: Final[Event] = ("esdb_gater", "request", "error")
RETRY_ATTEMPT: Final[Event] = ("esdb_gater", "retry", "attempt")
RETRY_EXHAUSTED: Final[Event] = ("esdb_gater", "retry", "exhausted")
NODE_UP: Final[Event] = ("esdb_gater", "cluster", "node", "up")
NODE_DOWN: Final[Event] = ("esdb_gater", "cluster", "node", "down")
CHANNEL_BROADCAST: Final[Event] = ("esdb_gater", "channel", "broadcast")
WORKER_REGISTERED: Final[Event] = ("esdb_gater", "worker", "registered")
WORKER_UNREGISTERED: Final[Event] = ("esdb_gater", "worker", "unregistered")
WORKER_LOOKUP: Final[Event] = ("esdb_gater", "worker", "lookup")

CATALOGUE: Final[tuple[Event, ...]] = (
    WORKER_REGISTERED,
    WORKER_UNREGISTERED,
    WORKER_LOOKUP,
    REQUEST_START,
    REQUEST_STOP,
    REQUEST_ERROR,
    RETRY_ATTEMPT,
    RETRY_EXHAUSTED,
    NODE_UP,
    NODE_DOWN,
    CHANNEL_BROADCAST,
)
# the original's code spelled the cluster events with three elements; attach takes those names too
_ALIASES: Final[dict[Event, Event]] = {
    ("esdb_gater", "cluster", "node_up"): NODE_UP,
    ("esdb_gater", "cluster", "node_down"): NODE_DOWN,
}
DEFAULT_HANDLER_ID: Final = "esdb_gater_telemetry_handler"

# metadata keys that become attributes of the esdb.events counter (bounded sets of values; the
# store id, topic or instance id would make one time series per value)
_METRIC_KEYS: Final = ("service", "op", "code", "reason", "result", "channel", "node")


@dataclass(frozen=True, slots=True)
class _Attached:
    events: frozenset[Event] | None  # None: every event (the 2-argument attach)
    fn: Callable[..., None]
    config: Any
    legacy: bool  # called with 3 arguments, not 4


_handlers: dict[str, _Attached] = {}
_log = logging.getLogger("esdb.telemetry")


def _event_name(event: Event | str) -> Event:
    name = tuple(event.split(".")) if isinstance(event, str) else tuple(event)
    if not name or not all(isinstance(p, str) and p for p in name):
        raise ValueError(f"not an event name: {event!r}")
    return _ALIASES.get(name, name)


@overload
def attach(handler_id: str, handler: Handler, /) -> bool: ...


@overload
def attach(handler_id: str, events: Iterable[Event | str], fn: HandlerFn, config: Any = None) -> bool: ...


def attach(handler_id: str, events: Any, fn: Any = None, config: Any = None) -> bool:
    """The seed's ``attach``: call ``fn(event, measurements, metadata, config)`` for each emitted
    event named in ``events`` (tuples such as ``("esdb_gater", "request", "stop")`` or dotted
    strings ``"esdb_gater.request.stop"``). The older two-argument form ``attach(id, handler)``
    calls ``handler(event, measurements, metadata)`` for every event. False when the id is taken
    (the seed's ``{error, already_exists}``). Handlers run synchronously where the event happens:
    keep them short."""
    if handler_id in _handlers:
        return False
    if fn is None:
        if not callable(events):
            raise TypeError("attach(handler_id, handler) or attach(handler_id, events, fn, config)")
        _handlers[handler_id] = _Attached(None, events, None, True)
        return True
    if isinstance(events, str) or (isinstance(events, tuple) and all(isinstance(p, str) for p in events)):
        raise TypeError("events is a list of event names, e.g. [('esdb_gater', 'request', 'stop')]")
    _handlers[handler_id] = _Attached(frozenset(_event_name(e) for e in events), fn, config, False)
    return True


def detach(handler_id: str) -> bool:
    """Remove a handler; False when there was none (``{error, not_found}``)."""
    return _handlers.pop(handler_id, None) is not None


def attached() -> list[str]:
    """The ids of the attached handlers."""
    return list(_handlers)


_LEVELS: Final[dict[Event, int]] = {
    REQUEST_START: logging.DEBUG,
    REQUEST_STOP: logging.DEBUG,
    REQUEST_ERROR: logging.WARNING,
    RETRY_ATTEMPT: logging.WARNING,
    RETRY_EXHAUSTED: logging.ERROR,
    NODE_DOWN: logging.WARNING,
    WORKER_LOOKUP: logging.DEBUG,
    CHANNEL_BROADCAST: logging.DEBUG,
}


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    return json.dumps(text)


def format_event(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> str:
    """One line, ``event=… key=value …`` (logfmt: values with spaces or quotes are JSON strings)."""
    parts = [f"event={'.'.join(event)}"]
    parts += [f"{k}={_logfmt(v)}" for k, v in measurements.items()]
    parts += [f"{k}={_logfmt(v)}" for k, v in metadata.items()]
    return " ".join(parts)


def default_handler(event: Event, measurements: dict[str, Any], metadata: dict[str, Any], config: Any = None) -> None:
    """Log the event as one structured line on the logger ``esdb.telemetry``: request and lookup
    events and broadcasts at DEBUG, errors, retries and lost nodes at WARNING, exhausted retries
    at ERROR, the rest at INFO (the seed's levels)."""
    level = _LEVELS.get(event, logging.INFO)
    if _log.isEnabledFor(level):
        _log.log(level, "%s", format_event(event, measurements, metadata))


def attach_default_handler() -> bool:
    """Attach ``default_handler`` to the whole catalogue (id ``esdb_gater_telemetry_handler``);
    False when it is attached already. Other events (link, scavenge) are not logged by it."""
    return attach(DEFAULT_HANDLER_ID, CATALOGUE, default_handler)


def detach_default_handler() -> bool:
    return detach(DEFAULT_HANDLER_ID)


def attach_handlers(names: Iterable[str]) -> None:
    """Attach the handlers named in the ``telemetry_handlers`` setting (``default``, or the seed's
    ``logger``: both are the default handler)."""
    for name in names:
        if name in ("default", "logger"):
            attach_default_handler()
        else:
            raise ValueError(f"unknown telemetry handler {name!r} (known: default, logger)")


_meter_provider: object | None = None
_metering = False


def metering() -> bool:
    """Whether an SDK meter provider is installed (else the esdb.events counter is not fed)."""
    global _meter_provider, _metering
    provider = _installed(_metrics_api, "_METER_PROVIDER", metrics.get_meter_provider)
    if provider is not _meter_provider:
        _meter_provider = provider
        _metering = provider is not None and type(provider).__name__ not in _NOOP_PROVIDERS
    return _metering


_GLOBALS_READABLE: Final = (
    not _ENV_PROVIDERS and hasattr(_metrics_api, "_METER_PROVIDER") and hasattr(trace, "_TRACER_PROVIDER")
)


def active() -> bool:
    """Whether an emitted event would reach anything: a handler, OTel metrics or traces. Hot
    paths (one event per request) check this before they build an event; with no handler and
    no OpenTelemetry SDK it costs a dict check and two global reads (about 0.1 µs)."""
    if _handlers:
        return True
    if _GLOBALS_READABLE and _metrics_api._METER_PROVIDER is None and trace._TRACER_PROVIDER is None:
        return False
    return metering() or tracer() is not None


def emit(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Tell the attached handlers that asked for ``event``; when OpenTelemetry is configured, also
    count it (``esdb.events`` with the event name and the bounded metadata keys as attributes)
    and add it as an event of the current span. A failing handler is logged and skipped."""
    if _handlers:
        for hid, h in list(_handlers.items()):
            if h.events is not None and event not in h.events:
                continue
            try:
                if h.legacy:
                    h.fn(event, measurements, metadata)
                else:
                    h.fn(event, measurements, metadata, h.config)
            except Exception:
                _log.exception("telemetry handler %s failed", hid)
    if _GLOBALS_READABLE and _metrics_api._METER_PROVIDER is None and trace._TRACER_PROVIDER is None:
        return  # no OpenTelemetry SDK
    name = ".".join(event)
    if metering():
        attrs = {"event": name}
        for k in _METRIC_KEYS:
            v = metadata.get(k)
            if v is not None:
                attrs[k] = str(v)
        instruments().events.add(1, attrs)
    if tracer() is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, {k: _attr(v) for k, v in (*measurements.items(), *metadata.items()) if v is not None})


def _attr(value: Any) -> Any:
    return value if isinstance(value, str | bool | int | float) else str(value)


def system_time_ms() -> int:
    return time.time_ns() // 1_000_000


# --- cluster node up/down: what one NATS connection sees ------------------------------------------


def _node_meta(nc: Any, source: str, reason: str) -> dict[str, Any]:
    info = getattr(nc, "_server_info", None) or {}
    url = nc.connected_url
    return {
        "node": info.get("server_name") or info.get("server_id") or "",
        "url": url.netloc if url is not None else "",
        "member_count": len(nc.servers),
        "connection": source,
        "reason": reason,
    }


def watch_connection(nc: Any, source: str) -> None:
    """Emit ``cluster.node.down`` when ``nc`` loses its server (not when it is closed) and
    ``cluster.node.up`` when it is connected again, or when the cluster announces a server it did
    not know (INFO ``connect_urls``). Chains the callbacks given to ``connect``; once per
    connection."""
    if getattr(nc, "_esdb_watched", False):
        return
    nc._esdb_watched = True
    prev_down, prev_up, prev_found = nc._disconnected_cb, nc._reconnected_cb, nc._discovered_server_cb

    async def down() -> None:
        if not nc.is_closed:
            emit(NODE_DOWN, {"system_time": system_time_ms()}, _node_meta(nc, source, "disconnected"))
        if prev_down is not None:
            await prev_down()

    async def up() -> None:
        emit(NODE_UP, {"system_time": system_time_ms()}, _node_meta(nc, source, "reconnected"))
        if prev_up is not None:
            await prev_up()

    async def found() -> None:
        emit(NODE_UP, {"system_time": system_time_ms()}, _node_meta(nc, source, "discovered"))
        if prev_found is not None:
            await prev_found()

    nc._disconnected_cb, nc._reconnected_cb, nc._discovered_server_cb = down, up, found
