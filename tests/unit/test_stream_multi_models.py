"""The wire models of stream.append_multi, stream.checkpoint and stream.read_all (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from esdb_gater.shared.models.stream import (
    NOTIFICATION_SHIFT,
    AppendMultiRequest,
    EventIn,
    ReadAllRequest,
    ReadAllResponse,
)


def _append(sid: str, expected: int = -2) -> dict[str, Any]:
    return {"stream_id": sid, "expected_version": expected, "events": [{"event_type": "E"}]}


def test_append_multi_accepts_appends_and_a_checkpoint() -> None:
    req = AppendMultiRequest.model_validate(
        {"appends": [_append("a", -1), _append("b", 4)], "checkpoint": {"name": "p", "position": 0}}
    )
    assert [(a.stream_id, a.expected_version) for a in req.appends] == [("a", -1), ("b", 4)]
    assert req.checkpoint is not None and req.checkpoint.position == 0
    assert AppendMultiRequest.model_validate({"checkpoint": {"name": "p", "position": 1}}).appends == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"appends": []},
        {"appends": [_append("a"), _append("a")]},
        {"appends": [_append(f"s{i}") for i in range(101)]},
        {"appends": [_append("a", -3)]},
        {"appends": [{"stream_id": "a", "events": []}]},
        {"appends": [_append("a")], "checkpoint": {"name": "", "position": 1}},
        {"appends": [_append("a")], "checkpoint": {"name": "é" * 129, "position": 1}},
        {"appends": [_append("a")], "checkpoint": {"name": "p", "position": True}},
    ],
)
def test_append_multi_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AppendMultiRequest.model_validate(body)


def test_read_all_takes_from_by_its_wire_name() -> None:
    req = ReadAllRequest.model_validate({"from": 5 << NOTIFICATION_SHIFT, "inclusive": False})
    assert req.from_ == 5 << NOTIFICATION_SHIFT and not req.inclusive and req.limit == 100
    assert "from" in ReadAllRequest.model_json_schema(by_alias=True)["properties"]
    with pytest.raises(ValidationError):
        ReadAllRequest.model_validate({"from": "5"})


def test_read_all_reply_and_a_read_event_appended_back() -> None:
    row: dict[str, Any] = {
        "event_id": "x",
        "event_type": "E",
        "stream_id": "s",
        "version": 0,
        "data": {},
        "metadata": {},
    }
    row |= {"timestamp": 1, "epoch_us": 1000, "position": 3, "notification_id": 3 << NOTIFICATION_SHIFT}
    wire = ReadAllResponse.from_rows([row], None, row["notification_id"]).to_wire()
    assert wire == {"events": [row], "next": None, "last_notification_id": 3 << NOTIFICATION_SHIFT}
    back = EventIn.model_validate(row)
    assert "notification_id" not in back.model_dump()
