"""Wire models of the stream service: what a request may and may not contain (SPEC.md §2, §3)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from esdb_gater.shared.core.subjects import MAX_STREAM_ID_BYTES
from esdb_gater.shared.models import stream as m
from esdb_gater.shared.models.common import Request


def _append(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_id": "orders-1", "events": [{"event_type": "Placed", "data": {"n": 1}}]}
    body.update(overrides)
    return body


def _fields_in_error(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


# --- append -----------------------------------------------------------------------------------


def test_append_defaults_to_any_version() -> None:
    req = m.AppendRequest.model_validate(_append())
    assert req.expected_version == m.ANY_VERSION == -2
    assert (m.NO_STREAM, m.ANY_VERSION, m.STREAM_EXISTS) == (-1, -2, -4)


@pytest.mark.parametrize("expected", [-1, -2, -4, 0, 1, 41, 2**40])
def test_append_accepts_valid_expected_versions(expected: int) -> None:
    assert m.AppendRequest.model_validate(_append(expected_version=expected)).expected_version == expected


@pytest.mark.parametrize("expected", [-3, -5, -100, -(2**40)])
def test_append_rejects_other_negative_expected_versions(expected: int) -> None:
    with pytest.raises(ValidationError, match="expected_version"):
        m.AppendRequest.model_validate(_append(expected_version=expected))


@pytest.mark.parametrize("expected", ["zero", 1.5, None, [0], {"v": 0}])
def test_append_rejects_non_integer_expected_version(expected: Any) -> None:
    with pytest.raises(ValidationError) as ei:
        m.AppendRequest.model_validate(_append(expected_version=expected))
    assert "expected_version" in _fields_in_error(ei.value)


def test_append_requires_at_least_one_event() -> None:
    with pytest.raises(ValidationError) as ei:
        m.AppendRequest.model_validate(_append(events=[]))
    assert "events" in _fields_in_error(ei.value)


@pytest.mark.parametrize("missing", ["stream_id", "events"])
def test_append_requires_fields(missing: str) -> None:
    body = _append()
    del body[missing]
    with pytest.raises(ValidationError) as ei:
        m.AppendRequest.model_validate(body)
    assert missing in _fields_in_error(ei.value)


def test_event_type_alias() -> None:
    ev = m.EventIn.model_validate({"type": "Placed"})
    assert ev.event_type == "Placed"
    assert m.EventIn.model_validate({"event_type": "Placed"}).event_type == "Placed"


def test_event_requires_event_type() -> None:
    with pytest.raises(ValidationError):
        m.EventIn.model_validate({"data": {}})


@pytest.mark.parametrize("event_type", ["", 5, None, "x" * 257])
def test_event_rejects_bad_event_type(event_type: Any) -> None:
    with pytest.raises(ValidationError):
        m.EventIn.model_validate({"event_type": event_type})


def test_event_defaults() -> None:
    ev = m.EventIn.model_validate({"event_type": "A"})
    assert ev.event_id is None
    assert ev.data is None
    assert ev.metadata == {}
    assert ev.tags is None
    assert ev.data_content_type == "application/json"
    assert ev.metadata_content_type == "application/json"


@pytest.mark.parametrize(
    ("field", "value"),
    [("event_id", ""), ("event_id", "x" * 257), ("metadata", []), ("metadata", "m"), ("tags", "t"), ("tags", [1])],
)
def test_event_rejects_bad_fields(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        m.EventIn.model_validate({"event_type": "A", field: value})


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (m.AppendRequest, _append(expected_verison=0)),
        (m.EventIn, {"event_type": "A", "evnet_id": "x"}),
        (m.ReadRequest, {"stream_id": "s", "cuont": 1}),
        (m.ForwardRequest, {"stream_id": "s", "direction": "forward"}),
        (m.BackwardRequest, {"stream_id": "s", "extra": 1}),
        (m.VersionRequest, {"stream_id": "s", "x": 1}),
        (m.ExistsRequest, {"stream_id": "s", "x": 1}),
        (m.ListRequest, {"page": 2}),
        (m.DeleteRequest, {"stream_id": "s", "hard": True}),
        (m.ReadUntilRequest, {"stream_id": "s", "timestamp": 1, "count": 1}),
        (m.ReadRangeRequest, {"stream_id": "s", "from_ts": 1, "to_ts": 2, "x": 1}),
        (m.VersionAtRequest, {"stream_id": "s", "timestamp": 1, "x": 1}),
        (m.CreateStoreRequest, {"replica": 1}),
        (m.StoreInfoRequest, {"x": 1}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_unknown_fields_are_rejected(model: type[BaseModel], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as ei:
        model.model_validate(body)
    assert any(err["type"] == "extra_forbidden" for err in ei.value.errors())


def test_every_request_model_forbids_extra_fields() -> None:
    requests = [
        getattr(m, name)
        for name in m.__all__
        if isinstance(getattr(m, name), type) and issubclass(getattr(m, name), BaseModel) and name.endswith("Request")
    ]
    assert len(requests) >= 12
    for model in [*requests, m.EventIn]:
        assert issubclass(model, Request), model
        assert model.model_config.get("extra") == "forbid", model


def test_read_only_event_fields_are_accepted_and_not_dumped() -> None:
    """A read event can be sent back as is."""
    recorded = {
        "event_id": "e1",
        "event_type": "A",
        "stream_id": "s",
        "version": 3,
        "data": {"x": 1},
        "metadata": {"k": "v"},
        "tags": ["t"],
        "timestamp": 1,
        "epoch_us": 1000,
        "position": 9,
        "data_content_type": "application/json",
        "metadata_content_type": "application/json",
    }
    ev = m.EventIn.model_validate(recorded)
    dumped = ev.model_dump()
    assert not {"stream_id", "version", "position", "timestamp", "epoch_us"} & dumped.keys()
    assert dumped["event_id"] == "e1"
    assert dumped["metadata"] == {"k": "v"}


# --- binary data ------------------------------------------------------------------------------


def test_binary_data_base64_is_decoded() -> None:
    raw = bytes(range(256))
    ev = m.EventIn.model_validate(
        {"event_type": "A", "data": base64.b64encode(raw).decode(), "data_content_type": "application/octet-stream"}
    )
    assert ev.data == raw


def test_binary_data_bytes_are_kept() -> None:
    ev = m.EventIn.model_validate({"event_type": "A", "data": b"\x00\xff", "data_content_type": "image/png"})
    assert ev.data == b"\x00\xff"


def test_binary_data_none_is_allowed() -> None:
    ev = m.EventIn.model_validate({"event_type": "A", "data_content_type": "application/octet-stream"})
    assert ev.data is None


@pytest.mark.parametrize("data", ["not base64!", "abc", "@@@@", {"x": 1}, [1, 2], 5, True])
def test_binary_data_must_be_base64_or_bytes(data: Any) -> None:
    with pytest.raises(ValidationError, match="data"):
        m.EventIn.model_validate({"event_type": "A", "data": data, "data_content_type": "application/octet-stream"})


@pytest.mark.parametrize(
    "ctype", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.acme+json"]
)
def test_json_content_types_keep_strings(ctype: str) -> None:
    ev = m.EventIn.model_validate({"event_type": "A", "data": "aGVsbG8=", "data_content_type": ctype})
    assert ev.data == "aGVsbG8="


@pytest.mark.parametrize(
    ("ctype", "is_json"),
    [
        ("application/json", True),
        ("application/cloudevents+json", True),
        ("Application/Json ; charset=utf-8", True),
        ("application/octet-stream", False),
        ("application/msgpack", False),
        ("text/plain", False),
        ("application/jsonx", False),
    ],
)
def test_is_json_content_type(ctype: str, is_json: bool) -> None:
    assert m.is_json_content_type(ctype) is is_json


# --- stream ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream_id",
    ["a", "a.b", "a.*", ">", " ", "$x", "日本語", "x" * MAX_STREAM_ID_BYTES, "é" * (MAX_STREAM_ID_BYTES // 2)],
)
def test_stream_id_accepts_up_to_256_bytes(stream_id: str) -> None:
    assert m.VersionRequest.model_validate({"stream_id": stream_id}).stream_id == stream_id


@pytest.mark.parametrize(
    "stream_id",
    ["", "x" * (MAX_STREAM_ID_BYTES + 1), "é" * (MAX_STREAM_ID_BYTES // 2) + "a", "🎉" * 65, "a\ud800b"],
    ids=["empty", "257-ascii", "257-bytes-2-byte-chars", "260-bytes-emoji", "lone-surrogate"],
)
def test_stream_id_rejects_empty_oversized_and_invalid_utf8(stream_id: str) -> None:
    for model in (m.AppendRequest, m.ReadRequest, m.VersionRequest, m.DeleteRequest):
        body: dict[str, Any] = _append(stream_id=stream_id) if model is m.AppendRequest else {"stream_id": stream_id}
        with pytest.raises(ValidationError) as ei:
            model.model_validate(body)
        assert "stream_id" in _fields_in_error(ei.value)


@pytest.mark.parametrize("stream_id", [5, None, ["a"], {"a": 1}, b"\xff"])
def test_stream_id_must_be_a_string(stream_id: Any) -> None:
    with pytest.raises(ValidationError):
        m.VersionRequest.model_validate({"stream_id": stream_id})


# --- reads ------------------------------------------------------------------------------------


def test_read_defaults() -> None:
    req = m.ReadRequest.model_validate({"stream_id": "s"})
    assert (req.start_version, req.count, req.direction) == (0, 100, "forward")
    assert m.BackwardRequest.model_validate({"stream_id": "s"}).start_version == -1
    assert m.ForwardRequest.model_validate({"stream_id": "s"}).start_version == 0


@pytest.mark.parametrize("model", [m.ReadRequest, m.ForwardRequest, m.BackwardRequest])
def test_count_is_bounded(model: type[BaseModel]) -> None:
    assert m.MAX_READ_COUNT == 10_000
    assert model.model_validate({"stream_id": "s", "count": 10_000}).count == 10_000  # type: ignore[attr-defined]
    assert model.model_validate({"stream_id": "s", "count": 0}).count == 0  # type: ignore[attr-defined]
    for bad in (10_001, 10**9, -1):
        with pytest.raises(ValidationError) as ei:
            model.model_validate({"stream_id": "s", "count": bad})
        assert "count" in _fields_in_error(ei.value)


def test_start_version_bounds() -> None:
    assert m.ReadRequest.model_validate({"stream_id": "s", "start_version": -1}).start_version == -1
    with pytest.raises(ValidationError):
        m.ReadRequest.model_validate({"stream_id": "s", "start_version": -2})
    with pytest.raises(ValidationError):
        m.ForwardRequest.model_validate({"stream_id": "s", "start_version": -1})
    with pytest.raises(ValidationError):
        m.BackwardRequest.model_validate({"stream_id": "s", "start_version": -2})


@pytest.mark.parametrize("direction", ["up", "Forward", "", None, 1])
def test_direction_is_forward_or_backward(direction: Any) -> None:
    with pytest.raises(ValidationError):
        m.ReadRequest.model_validate({"stream_id": "s", "direction": direction})
    with pytest.raises(ValidationError):
        m.ReadRangeRequest.model_validate({"stream_id": "s", "from_ts": 0, "to_ts": 1, "direction": direction})


@pytest.mark.parametrize("limit", [0, -1, 10_001])
def test_list_limit_bounds(limit: int) -> None:
    with pytest.raises(ValidationError):
        m.ListRequest.model_validate({"limit": limit})


def test_list_defaults() -> None:
    req = m.ListRequest.model_validate({})
    assert req.cursor is None
    assert req.limit == 1000


def test_temporal_requests_require_timestamps() -> None:
    with pytest.raises(ValidationError):
        m.ReadUntilRequest.model_validate({"stream_id": "s"})
    with pytest.raises(ValidationError):
        m.ReadRangeRequest.model_validate({"stream_id": "s", "from_ts": 1})
    with pytest.raises(ValidationError):
        m.VersionAtRequest.model_validate({"stream_id": "s"})
    with pytest.raises(ValidationError):
        m.ReadUntilRequest.model_validate({"stream_id": "s", "timestamp": 1, "limit": 10_001})
    req = m.ReadRangeRequest.model_validate({"stream_id": "s", "from_ts": 1, "to_ts": 2})
    assert (req.direction, req.limit) == ("forward", 1000)


# --- store admin ------------------------------------------------------------------------------


def test_create_store_fields_are_optional_and_bounded() -> None:
    m.CreateStoreRequest.model_validate({})  # every field may be left to the service's defaults
    req = m.CreateStoreRequest.model_validate(
        {"replicas": 3, "storage": "memory", "max_age_s": 60, "max_bytes": 1 << 20, "duplicate_window_s": 30}
    )
    assert (req.replicas, req.storage, req.max_age_s, req.max_bytes, req.duplicate_window_s) == (
        3,
        "memory",
        60,
        1 << 20,
        30,
    )
    for bad in (
        {"replicas": 0},
        {"replicas": 6},
        {"storage": "disk"},
        {"max_age_s": -1},
        {"max_bytes": -2},
        {"duplicate_window_s": 0},
        {"duplicate_window_s": 86401},
        {"description": "d" * 1025},
    ):
        with pytest.raises(ValidationError):
            m.CreateStoreRequest.model_validate(bad)


# --- replies ----------------------------------------------------------------------------------


def test_reply_models_field_names() -> None:
    assert set(m.AppendResponse.model_fields) == {"version", "position", "count"}
    assert set(m.EventsResponse.model_fields) == {"events"}
    assert set(m.VersionResponse.model_fields) == {"version"}
    assert set(m.ExistsResponse.model_fields) == {"exists"}
    assert set(m.ListResponse.model_fields) == {"streams", "next"}
    assert set(m.RecordedEvent.model_fields) == {
        "event_id",
        "event_type",
        "stream_id",
        "version",
        "data",
        "metadata",
        "tags",
        "timestamp",
        "epoch_us",
        "position",
        "data_content_type",
        "metadata_content_type",
    }


def test_list_response_next_is_required_and_nullable() -> None:
    assert m.ListResponse.model_validate({"streams": [], "next": None}).next is None
    with pytest.raises(ValidationError):
        m.ListResponse.model_validate({"streams": []})
