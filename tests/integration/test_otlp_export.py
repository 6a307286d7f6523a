"""Telemetry leaves over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: one client request
produces one trace, client → service → JetStream, and request/retry/error metrics arrive.

A minimal OTLP/HTTP receiver runs on 127.0.0.1; the service and the client each run in their own
process (OpenTelemetry's providers are global per process), against this module's own server so
no in-process service instance answers instead."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from esdb_gater.shared.tooling.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces":
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            with self.server.lock:
                for rs in req.resource_spans:
                    service = next(
                        (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), ""
                    )
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            self.server.spans.append(
                                {
                                    "service": service,
                                    "name": sp.name,
                                    "trace_id": sp.trace_id.hex(),
                                    "span_id": sp.span_id.hex(),
                                    "parent": sp.parent_span_id.hex(),
                                    "kind": sp.kind,
                                }
                            )
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/v1/metrics":
            req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            with self.server.lock:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            points = list(m.sum.data_points) or list(m.histogram.data_points)
                            for p in points:
                                attrs = {a.key: a.value.string_value for a in p.attributes}
                                self.server.metrics.append({"name": m.name, "attrs": attrs})
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    t = threading.Thread(target=r.serve_forever, daemon=True)
    t.start()
    try:
        yield r
    finally:
        r.shutdown()
        r.server_close()


def _env(receiver: Receiver, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_SERVICE_NAME": name,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "ESDB_GATER_AUTO_CREATE_STORES": "true",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def test_one_request_is_one_trace_client_service_jetstream_and_metrics_arrive(receiver: Receiver) -> None:
    with NatsServer() as server:
        service = subprocess.Popen(
            [sys.executable, "-m", "esdb_gater.cli", "serve", "stream", "--nats", server.url],
            env=_env(receiver, "esdb-stream-under-test"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_service(server.url)
            out = subprocess.run(
                [sys.executable, str(ROOT / "tests/integration/otlp_client.py"), server.url],
                env=_env(receiver, "otlp-test-client"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            trace_id = out.stdout.strip().splitlines()[-1]
        finally:
            service.terminate()  # SIGTERM: the service drains and flushes its telemetry
            service.wait(15)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with receiver.lock:
            spans = [s for s in receiver.spans if s["trace_id"] == trace_id]
            metric_names = {m["name"] for m in receiver.metrics}
        if {"stream.append", "jetstream publish"} <= {
            s["name"] for s in spans if s["service"] == "esdb-stream-under-test"
        } and "esdb.events" in metric_names:
            break
        time.sleep(0.1)

    by_name = {(s["service"], s["name"]): s for s in spans}
    client = by_name[("otlp-test-client", "stream.append")]
    server_span = by_name[("esdb-stream-under-test", "stream.append")]
    js = by_name[("esdb-stream-under-test", "jetstream publish")]
    assert client["kind"] == 3  # SPAN_KIND_CLIENT
    assert server_span["kind"] == 2 and server_span["parent"] == client["span_id"]  # continues traceparent
    assert js["parent"] == server_span["span_id"]

    with receiver.lock:
        metrics = list(receiver.metrics)
    names = {m["name"] for m in metrics}
    assert {"esdb.request.duration", "esdb.request.count", "esdb.request.errors", "esdb.events"} <= names
    errors = [m["attrs"] for m in metrics if m["name"] == "esdb.request.errors"]
    assert any(a.get("code") == "stream_not_found" for a in errors)
    events = {m["attrs"].get("event") for m in metrics if m["name"] == "esdb.events"}
    assert {"esdb_gater.retry.attempt", "esdb_gater.retry.exhausted"} <= events


def _wait_for_service(url: str) -> None:
    import asyncio

    import nats

    async def ping() -> None:
        nc = await nats.connect(url)
        try:
            for _ in range(150):
                try:
                    await nc.request("$SRV.PING.esdb-stream", b"", timeout=0.2)
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            raise AssertionError("the stream service did not start")
        finally:
            await nc.close()

    asyncio.run(ping())
