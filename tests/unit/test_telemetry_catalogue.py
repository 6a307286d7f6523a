"""The seed's telemetry facade (docs/telemetry.md): attach with an event list and a config,
the two-argument attach, the default handler's log lines, the settings, and OpenTelemetry only
when an SDK is installed."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics import _internal as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.client.retry import RetryConfig, default_config
from esdb_gater.shared.core import telemetry
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.telemetry import (
    CATALOGUE,
    CHANNEL_BROADCAST,
    NODE_UP,
    REQUEST_ERROR,
    REQUEST_START,
    REQUEST_STOP,
    attach,
    attach_default_handler,
    attach_handlers,
    detach,
    detach_default_handler,
    emit,
    format_event,
)

Seen = list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any], Any]]


@pytest.fixture(autouse=True)
def _clean() -> Any:
    before = set(telemetry.attached())
    yield
    for hid in set(telemetry.attached()) - before:
        detach(hid)


def test_the_catalogue_has_the_seeds_eleven_events() -> None:
    assert len(CATALOGUE) == 11 and len(set(CATALOGUE)) == 11
    assert {e[1] for e in CATALOGUE} == {"request", "retry", "cluster", "channel", "worker"}
    assert all(e[0] == "esdb_gater" for e in CATALOGUE)


def test_attach_delivers_only_the_named_events_with_the_config() -> None:
    seen: Seen = []
    cfg = {"sink": "test"}
    assert attach("only-stop", [REQUEST_STOP, "esdb_gater.request.error"], lambda *a: seen.append(a), cfg)
    emit(REQUEST_START, {"system_time": 1}, {"op": "stream.append"})
    emit(REQUEST_STOP, {"duration": 1000}, {"op": "stream.append", "store_id": "s1"})
    emit(REQUEST_ERROR, {"duration": 7}, {"op": "stream.append", "code": "not_found"})
    emit(CHANNEL_BROADCAST, {"recipient_count": 0}, {"channel": "events"})
    assert [(e, m) for e, m, _, _ in seen] == [(REQUEST_STOP, {"duration": 1000}), (REQUEST_ERROR, {"duration": 7})]
    assert seen[0][2] == {"op": "stream.append", "store_id": "s1"}  # metadata intact
    assert all(c is cfg for *_, c in seen)


def test_the_original_codes_cluster_names_are_aliases() -> None:
    seen: Seen = []
    assert attach("old-names", [("esdb_gater", "cluster", "node_up")], lambda *a: seen.append(a))
    emit(NODE_UP, {"system_time": 1}, {"node": "n1"})
    assert [e for e, *_ in seen] == [("esdb_gater", "cluster", "node", "up")]


def test_two_argument_attach_receives_every_event_with_three_arguments() -> None:
    seen: list[tuple[Any, ...]] = []
    assert attach("all", lambda *a: seen.append(a))
    emit(REQUEST_START, {"system_time": 1}, {})
    emit(("link", "created"), {"system_time": 2}, {"store_id": "s"})  # not in the catalogue: still delivered
    assert [len(a) for a in seen] == [3, 3]
    assert [a[0] for a in seen] == [REQUEST_START, ("link", "created")]


def test_ids_are_unique_and_detach_reports_what_it_did() -> None:
    assert attach("dup", [REQUEST_STOP], lambda *a: None)
    assert not attach("dup", lambda *a: None)  # {error, already_exists}
    assert detach("dup")
    assert not detach("dup")  # {error, not_found}
    assert attach("dup", [REQUEST_STOP], lambda *a: None)  # free again


def test_a_single_event_or_bad_name_is_refused() -> None:
    with pytest.raises(TypeError):
        attach("one", REQUEST_STOP, lambda *a: None)
    with pytest.raises(TypeError):
        attach("one", "esdb_gater.request.stop", lambda *a: None)
    with pytest.raises(ValueError):
        attach("one", [""], lambda *a: None)
    assert "one" not in telemetry.attached()


def test_a_failing_handler_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    seen: Seen = []

    def boom(*a: Any) -> None:
        raise RuntimeError("handler bug")

    assert attach("boom", [REQUEST_STOP], boom)
    assert attach("after", [REQUEST_STOP], lambda *a: seen.append(a))
    with caplog.at_level(logging.ERROR, "esdb.telemetry"):
        emit(REQUEST_STOP, {"duration": 1}, {})
    assert len(seen) == 1
    assert any("telemetry handler boom failed" in r.getMessage() for r in caplog.records)


def test_default_handler_logs_one_structured_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    assert attach_default_handler()
    assert not attach_default_handler()  # already attached
    with caplog.at_level(logging.DEBUG, "esdb.telemetry"):
        emit(REQUEST_STOP, {"duration": 1234, "system_time": 5}, {"service": "esdb-stream", "op": "stream.append"})
        emit(
            REQUEST_ERROR,
            {"duration": 99},
            {"op": "stream.append", "store_id": "s1", "code": "wrong_expected_version", "note": "two words"},
        )
        emit(NODE_UP, {"system_time": 7}, {"node": "n1", "member_count": 3})
        emit(("link", "created"), {}, {})  # not in the catalogue: not logged by the default handler
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name == "esdb.telemetry"]
    assert lines == [
        (
            "esdb.telemetry",
            logging.DEBUG,
            "event=esdb_gater.request.stop duration=1234 system_time=5 service=esdb-stream op=stream.append",
        ),
        (
            "esdb.telemetry",
            logging.WARNING,
            "event=esdb_gater.request.error duration=99 op=stream.append store_id=s1 "
            'code=wrong_expected_version note="two words"',
        ),
        ("esdb.telemetry", logging.INFO, "event=esdb_gater.cluster.node.up system_time=7 node=n1 member_count=3"),
    ]
    assert detach_default_handler()
    assert not detach_default_handler()


def test_format_event_quotes_what_would_break_a_line() -> None:
    line = format_event(REQUEST_STOP, {"duration": 1}, {"topic": 'a "b"\nc', "seq": None, "ok": True})
    assert line == 'event=esdb_gater.request.stop duration=1 topic="a \\"b\\"\\nc" seq=null ok=true'
    assert "\n" not in line


def test_telemetry_handlers_setting_attaches_the_default_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESDB_GATER_TELEMETRY_HANDLERS", "default")
    assert Settings().telemetry_handlers == ["default"]
    monkeypatch.setenv("ESDB_GATER_TELEMETRY_HANDLERS", '["logger"]')
    assert Settings().telemetry_handlers == ["logger"]
    monkeypatch.setenv("ESDB_GATER_TELEMETRY_HANDLERS", "nonsense")
    with pytest.raises(ValueError):
        Settings()
    monkeypatch.delenv("ESDB_GATER_TELEMETRY_HANDLERS")
    assert Settings().telemetry_handlers == []
    attach_handlers(["default", "logger"])  # both name the default handler: attached once
    assert telemetry.attached().count(telemetry.DEFAULT_HANDLER_ID) == 1
    with pytest.raises(ValueError):
        attach_handlers(["statsd"])


def test_retry_settings_use_the_seeds_names_and_feed_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Settings().retry
    assert (r.max_attempts, r.base_delay_ms, r.max_delay_ms) == (10, 100, 30_000)
    assert default_config() == RetryConfig()  # 10 retries after the first call
    assert RetryConfig().max_attempts == 10
    monkeypatch.setenv("ESDB_GATER_RETRY__MAX_ATTEMPTS", "3")
    monkeypatch.setenv("ESDB_GATER_RETRY__BASE_DELAY_MS", "20")
    expected = RetryConfig(base_delay_ms=20, max_delay_ms=30_000, max_retries=3)
    assert default_config() == expected
    nc: Any = object()  # the constructor only keeps the connection
    assert GaterClient(nc).retry == expected
    explicit = RetryConfig(max_retries=1)
    assert GaterClient(nc, retry=explicit).retry is explicit
    assert GaterClient(nc, retry=None).retry is None


class _Counter:
    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    def add(self, n: int, attrs: dict[str, str]) -> None:
        self.calls.append(attrs)


class _Instruments:
    def __init__(self) -> None:
        self.events = _Counter()


def test_no_otel_sdk_no_counter_and_no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Instruments()
    monkeypatch.setattr(telemetry, "instruments", lambda: fake)
    monkeypatch.setattr(metrics_api, "_METER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    emit(REQUEST_STOP, {"duration": 1}, {"op": "stream.append"})
    assert fake.events.calls == []
    assert not telemetry.metering() and telemetry.tracer() is None
    if not telemetry.attached():
        assert not telemetry.active()  # the endpoint builds no event at all


def test_with_an_otel_sdk_events_are_counted_with_bounded_attributes_and_added_to_the_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _Instruments()
    monkeypatch.setattr(telemetry, "instruments", lambda: fake)
    monkeypatch.setattr(metrics_api, "_METER_PROVIDER", MeterProvider())
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", tp)
    assert telemetry.active()
    t = telemetry.tracer()
    assert t is not None
    with t.start_as_current_span("stream.append"):
        emit(
            REQUEST_ERROR,
            {"duration": 5},
            {"service": "esdb-stream", "op": "stream.append", "store_id": "s1", "code": "not_found"},
        )
    emit(CHANNEL_BROADCAST, {"recipient_count": 2}, {"channel": "events", "topic": "t.1", "seq": None})
    assert fake.events.calls == [
        {"event": "esdb_gater.request.error", "service": "esdb-stream", "op": "stream.append", "code": "not_found"},
        {"event": "esdb_gater.channel.broadcast", "channel": "events"},  # no store id, topic or seq series
    ]
    (span,) = exporter.get_finished_spans()
    (ev,) = span.events
    assert ev.name == "esdb_gater.request.error"
    assert ev.attributes is not None and ev.attributes["duration"] == 5 and ev.attributes["store_id"] == "s1"


def test_an_invalid_service_setting_does_not_break_the_clients_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESDB_GATER_MAX_IN_FLIGHT", "0")  # invalid, but no business of a client
    assert default_config() == RetryConfig()
    monkeypatch.setenv("ESDB_GATER_RETRY__MAX_ATTEMPTS", "-1")  # invalid and the client's: refused
    with pytest.raises(ValueError):
        default_config()
