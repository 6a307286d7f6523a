"""Wire models of the stream service (``<prefix>.api.<store>.stream.<op>``) and store admin ops.

Field names are the seed functions' arguments in snake_case (SPEC.md §2, §3).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, Field, field_validator, model_validator

from esdb_gater.shared.models.common import Request, Response, StreamId

__all__ = [
    "ANY_VERSION",
    "MAX_MULTI_APPENDS",
    "MAX_READ_COUNT",
    "NOTIFICATION_SHIFT",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AllEvent",
    "AppendMultiRequest",
    "AppendMultiResponse",
    "AppendMultiResult",
    "AppendRequest",
    "AppendResponse",
    "BackwardRequest",
    "CheckpointIn",
    "CheckpointRequest",
    "CheckpointResponse",
    "CreateStoreRequest",
    "DeleteRequest",
    "EventIn",
    "EventsResponse",
    "ExistsRequest",
    "ExistsResponse",
    "ForwardRequest",
    "ListRequest",
    "ListResponse",
    "MultiAppend",
    "ReadAllRequest",
    "ReadAllResponse",
    "ReadRangeRequest",
    "ReadRequest",
    "ReadUntilRequest",
    "RecordedEvent",
    "ReindexRequest",
    "ReindexResponse",
    "StoreInfoRequest",
    "StoreInfoResponse",
    "VersionAtRequest",
    "VersionRequest",
    "VersionResponse",
    "is_json_content_type",
]

NO_STREAM = -1
ANY_VERSION = -2
STREAM_EXISTS = -4
MAX_READ_COUNT = 10_000
MAX_MULTI_APPENDS = 100  # appends (streams) in one stream.append_multi
MAX_EVENT_TYPES = 100  # event types in one read_all filter
# notification_id = position << NOTIFICATION_SHIFT | index of the event in its commit; 2**14 > the
# largest append (settings.max_events_per_append <= 10000), docs/adr/0023-multi-stream-append-and-read-all.md
NOTIFICATION_SHIFT = 14

Direction = Literal["forward", "backward"]


def is_json_content_type(ctype: str) -> bool:
    base = ctype.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


class EventIn(Request):
    """An event to append. ``type`` is accepted as an alias of ``event_type`` (the seed's
    quick start uses it). Fields that only read replies carry (``stream_id``, ``version``,
    ``position``, ``timestamp``, ``epoch_us``) are accepted and ignored, so a read event can be
    sent back as is (``notification_id``, of ``read_all``, too)."""

    event_id: str | None = Field(default=None, min_length=1, max_length=256)
    event_type: str = Field(min_length=1, max_length=256, validation_alias=AliasChoices("event_type", "type"))
    data: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] | None = None
    data_content_type: str = Field(default="application/json", min_length=1, max_length=128)
    metadata_content_type: str = Field(default="application/json", min_length=1, max_length=128)
    # read-only fields of RecordedEvent, ignored on input
    stream_id: Any = Field(default=None, exclude=True)
    version: Any = Field(default=None, exclude=True)
    position: Any = Field(default=None, exclude=True)
    timestamp: Any = Field(default=None, exclude=True)
    epoch_us: Any = Field(default=None, exclude=True)
    notification_id: Any = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _binary_data(self) -> EventIn:
        """Non-JSON content types carry bytes: msgpack ``bin`` as is, JSON as base64 text."""
        if is_json_content_type(self.data_content_type):
            if isinstance(self.data, bytes):
                raise ValueError("binary data needs a non-JSON data_content_type, e.g. application/octet-stream")
            return self
        if self.data is None:
            return self
        if isinstance(self.data, bytes):
            return self
        if isinstance(self.data, str):
            try:
                self.data = base64.b64decode(self.data, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"data must be base64 text (or msgpack bin) for content type {self.data_content_type!r}"
                ) from None
            return self
        raise ValueError(f"data must be bytes for content type {self.data_content_type!r}")


class RecordedEvent(BaseModel):
    """An event as stored and read back (SPEC.md §3)."""

    event_id: str
    event_type: str
    stream_id: str
    version: int = Field(description="0-based position in its stream")
    data: Any
    metadata: dict[str, Any]
    tags: list[str] | None = None
    timestamp: int = Field(description="ms since epoch (server time of the append)")
    epoch_us: int = Field(description="µs since epoch; all events of one append share it")
    position: int = Field(description="global order in the store; events of one append share it")
    data_content_type: str = "application/json"
    metadata_content_type: str = "application/json"


class AppendRequest(Request):
    stream_id: StreamId
    expected_version: int = Field(
        default=ANY_VERSION,
        description="-1 no stream, -2 any (default), -4 stream exists, N>=0 exact version",
    )
    events: list[EventIn] = Field(min_length=1)

    @field_validator("expected_version")
    @classmethod
    def _expected(cls, v: int) -> int:
        return _check_expected(v)


class AppendResponse(BaseModel):
    version: int = Field(description="version of the last appended event")
    position: int = Field(description="position of the append in the store")
    count: int


class ReadRequest(Request):
    stream_id: StreamId
    start_version: int = Field(default=0, ge=-1)
    count: int = Field(default=100, ge=0, le=MAX_READ_COUNT)
    direction: Direction = "forward"
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class ForwardRequest(Request):
    stream_id: StreamId
    start_version: int = Field(default=0, ge=0)
    count: int = Field(default=100, ge=0, le=MAX_READ_COUNT)
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class BackwardRequest(Request):
    stream_id: StreamId
    start_version: int = Field(default=-1, ge=-1, description="-1 = from the last event")
    count: int = Field(default=100, ge=0, le=MAX_READ_COUNT)
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class EventsResponse(Response):
    events: list[RecordedEvent]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> EventsResponse:
        """Wrap RecordedEvent-shaped dicts read from the log without validating them again."""
        return cls.model_construct(events=rows)  # type: ignore[arg-type]  # dicts stand in for RecordedEvent

    def to_wire(self) -> dict[str, Any]:
        return {"events": [e if isinstance(e, dict) else e.model_dump(mode="python") for e in self.events]}


class VersionRequest(Request):
    stream_id: StreamId


class VersionResponse(BaseModel):
    version: int


class ExistsRequest(Request):
    stream_id: StreamId


class ExistsResponse(BaseModel):
    exists: bool


class ListRequest(Request):
    cursor: str | None = Field(default=None, description="the `next` of the previous page")
    limit: int = Field(default=1000, ge=1, le=MAX_READ_COUNT)


class ListResponse(BaseModel):
    streams: list[str]
    next: str | None = Field(description="cursor of the next page; null on the last page")


class DeleteRequest(Request):
    stream_id: StreamId


class ReadUntilRequest(Request):
    stream_id: StreamId
    timestamp: int = Field(description="epoch_us, inclusive")
    direction: Direction = "forward"
    limit: int = Field(default=1000, ge=0, le=MAX_READ_COUNT)
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class ReadRangeRequest(Request):
    stream_id: StreamId
    from_ts: int = Field(description="epoch_us, inclusive")
    to_ts: int = Field(description="epoch_us, inclusive")
    direction: Direction = "forward"
    limit: int = Field(default=1000, ge=0, le=MAX_READ_COUNT)
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class VersionAtRequest(Request):
    stream_id: StreamId
    timestamp: int = Field(description="epoch_us, inclusive")


class CreateStoreRequest(Request):
    """Fields left out take the service's configured defaults (``stores.<id>``, else
    ``default_store``)."""

    replicas: int | None = Field(default=None, ge=1, le=5)
    storage: Literal["file", "memory"] | None = None
    max_age_s: float | None = Field(default=None, ge=0)
    max_bytes: int | None = Field(default=None, ge=-1)
    duplicate_window_s: float | None = Field(default=None, gt=0, le=86400)
    description: str | None = Field(default=None, max_length=1024)


class StoreInfoRequest(Request):
    pass


class ReindexRequest(Request):
    """``store.reindex``: rebuild the store's event-id index from its log (admin, ADR 0017)."""


class ReindexResponse(BaseModel):
    store: str
    scanned: int = Field(description="commits read from the log")
    indexed: int = Field(description="index entries written (missing, or pointing at an earlier commit)")
    checkpoint: int = Field(description="every commit at or below this position is now indexed")


class StoreInfoResponse(BaseModel):
    store: str
    replicas: int
    storage: Literal["file", "memory"]
    max_age_s: float
    max_bytes: int
    duplicate_window_s: float
    events: int = Field(description="number of stored appends (JetStream messages) in the log")
    streams: int
    created: bool = Field(default=False, description="true when this request created the store")


# --- stream.append_multi, stream.checkpoint, stream.read_all (docs/adr/0023-multi-stream-append-and-read-all.md)


def _check_expected(v: int) -> int:
    if v < 0 and v not in (NO_STREAM, ANY_VERSION, STREAM_EXISTS):
        raise ValueError("expected_version must be -1, -2, -4 or >= 0")
    return v


def _check_name(value: str) -> str:
    n = len(value.encode("utf-8", "surrogatepass"))
    if n == 0 or n > 256:
        raise ValueError(f"name must be 1..256 bytes of UTF-8, not {n}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("name must be valid UTF-8") from None
    return value


CheckpointName = Annotated[str, AfterValidator(_check_name)]


class MultiAppend(AppendRequest):
    """One stream's part of an ``append_multi``: the fields and rules of an ``append`` request."""


class CheckpointIn(Request):
    """A named position stored with the appends, compare-and-set: it must be greater than the
    stored one."""

    name: CheckpointName
    position: int = Field(ge=0, le=2**63 - 1)


class AppendMultiRequest(Request):
    appends: list[MultiAppend] = Field(
        default_factory=list,
        max_length=MAX_MULTI_APPENDS,
        description="one entry per stream, stream ids distinct; may be empty only with a checkpoint",
    )
    checkpoint: CheckpointIn | None = None

    @model_validator(mode="after")
    def _distinct(self) -> AppendMultiRequest:
        if not self.appends and self.checkpoint is None:
            raise ValueError("appends must not be empty without a checkpoint")
        seen: set[str] = set()
        for a in self.appends:
            if a.stream_id in seen:
                raise ValueError(f"stream {a.stream_id!r} appears more than once; one entry per stream")
            seen.add(a.stream_id)
        return self


class AppendMultiResult(BaseModel):
    stream_id: str
    version: int = Field(description="the stream's new last version")
    position: int = Field(description="position of this stream's commit in the store")
    count: int
    first_notification_id: int = Field(description="notification_id of the append's first event (position << 14)")


class AppendMultiResponse(BaseModel):
    results: list[AppendMultiResult] = Field(description="one per append, in request order")
    position: int = Field(description="position of the last message of the transaction")


class CheckpointRequest(Request):
    name: CheckpointName


class CheckpointResponse(BaseModel):
    name: str
    position: int | None = Field(description="the stored position; null when none is stored")


EventType = Annotated[str, Field(min_length=1, max_length=256)]


class ReadAllRequest(Request):
    from_: int | None = Field(
        default=None,
        ge=0,
        alias="from",
        description="a notification id; null: the start (forward) or the end (backward)",
    )
    inclusive: bool = Field(default=True, description="whether the event whose id equals `from` is included")
    to: int | None = Field(default=None, ge=0, description="notification id bound, inclusive, in the reading direction")
    direction: Direction = "forward"
    limit: int = Field(default=100, ge=1, le=MAX_READ_COUNT, description="events returned (after the filters)")
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=MAX_EVENT_TYPES)
    stream_prefix: str | None = Field(default=None, min_length=1, max_length=256)
    raw: bool = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class AllEvent(RecordedEvent):
    """An event of ``read_all``: a RecordedEvent with its store-wide id."""

    notification_id: int = Field(description="position << 14 | index of the event in its append")


class ReadAllResponse(Response):
    events: list[AllEvent]
    next: int | None = Field(
        description="pass as `from` with `inclusive: false` for the next page; null when nothing more can follow"
    )
    last_notification_id: int | None = Field(description="the store's newest event id at read time; null when empty")

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], nxt: int | None, last: int | None) -> ReadAllResponse:
        """Wrap event dicts read from the log without validating them again."""
        return cls.model_construct(events=rows, next=nxt, last_notification_id=last)  # type: ignore[arg-type]

    def to_wire(self) -> dict[str, Any]:
        return {
            "events": [e if isinstance(e, dict) else e.model_dump(mode="python") for e in self.events],
            "next": self.next,
            "last_notification_id": self.last_notification_id,
        }
