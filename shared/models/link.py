"""Wire models of the link service (``<prefix>.api.<store>.link.<op>``), SPEC.md §8.

A link copies the events of a source (one stream, a stream-id pattern, or every stream) that
pass a declarative filter, optionally transformed, into the derived stream ``$link:<name>``
(docs/api/link.md, docs/adr/0010-links.md). Filters and transforms are data, not code, so any
language can define them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgpack
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from esdb_gater.shared.core.patterns import check_pattern
from esdb_gater.shared.models.common import Request, Response, StreamId

__all__ = [
    "DERIVED_PREFIX",
    "FIELD_ROOTS",
    "FILTER_OPS",
    "AllSource",
    "CreateLinkRequest",
    "DeleteLinkRequest",
    "FieldFilter",
    "Filter",
    "GroupFilter",
    "LinkInfo",
    "LinkNameRequest",
    "LinksResponse",
    "ListLinksRequest",
    "PatternSource",
    "Source",
    "StreamSource",
    "Transform",
    "derived_stream",
]

DERIVED_PREFIX: Final = "$link:"
FILTER_OPS: Final = ("=", "!=", ">", ">=", "<", "<=", "in", "contains", "matches")
# top-level event fields a filter may look at; data and metadata take sub-paths (data.a.b)
FIELD_ROOTS: Final = ("event_type", "stream_id", "event_id", "version", "tags", "data", "metadata")
MAX_FILTER_DEPTH: Final = 8
MAX_FILTER_LEAVES: Final = 256
MAX_NAME_BYTES: Final = 200


def derived_stream(name: str) -> str:
    """The stream a link writes: ``$link:<name>``."""
    return DERIVED_PREFIX + name


def _check_name(value: str) -> str:
    n = len(value.encode("utf-8", "surrogatepass"))
    if n == 0 or n > MAX_NAME_BYTES:
        raise ValueError(f"name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("name must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("name must be valid UTF-8") from None
    return value


LinkName = Annotated[
    str, Field(description="1 to 200 bytes, no control characters; the derived stream is $link:<name>")
]


# --- source ----------------------------------------------------------------------------------


class StreamSource(Request):
    """One stream (may be another link's ``$link:`` stream, to chain links)."""

    type: Literal["stream"]
    stream_id: StreamId


class PatternSource(Request):
    """Streams whose id matches ``pattern``: ``*`` is any run of characters, the rest literal.
    ``$link:`` streams never match a pattern."""

    type: Literal["stream_pattern"]
    pattern: str = Field(min_length=1, max_length=256)


class AllSource(Request):
    """Every stream of the store except ``$link:`` streams."""

    type: Literal["all"]


Source = Annotated[StreamSource | PatternSource | AllSource, Field(discriminator="type")]


# --- filter ----------------------------------------------------------------------------------


class FieldFilter(Request):
    """``{"field": "data.amount", "op": ">", "value": 100}``."""

    field: str = Field(
        min_length=1,
        max_length=512,
        description="event_type, stream_id, event_id, version, tags, or a path into data./metadata. "
        "(dots separate keys)",
    )
    op: Literal["=", "!=", ">", ">=", "<", "<=", "in", "contains", "matches"]
    value: Any = None

    @field_validator("field")
    @classmethod
    def _field(cls, v: str) -> str:
        parts = v.split(".")
        if parts[0] not in FIELD_ROOTS:
            raise ValueError(f"field must start with one of {', '.join(FIELD_ROOTS)}")
        if any(p == "" for p in parts):
            raise ValueError("field has an empty path segment")
        if len(parts) > 1 and parts[0] not in ("data", "metadata"):
            raise ValueError(f"{parts[0]} has no sub-fields; only data.… and metadata.… paths do")
        return v

    @model_validator(mode="after")
    def _value(self) -> FieldFilter:
        v = self.value
        if self.op == "in":
            if not isinstance(v, list) or len(v) > 1000:
                raise ValueError("value of 'in' must be a list (at most 1000 items)")
        elif self.op in (">", ">=", "<", "<="):
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                raise ValueError(f"value of {self.op!r} must be a number or a string")
        elif self.op == "matches":
            if not isinstance(v, str) or not v or len(v) > 512:
                raise ValueError("value of 'matches' must be a regular expression of 1 to 512 characters")
            reason = check_pattern(v)  # RE2: linear time; no backreferences or lookaround
            if reason is not None:
                raise ValueError(f"value of 'matches' is not a pattern the gateway runs: {reason}")
        return self


class GroupFilter(Request):
    """``{"type": "and"|"or", "filters": [...]}``."""

    type: Literal["and", "or"]
    filters: list[Filter] = Field(min_length=1, max_length=64)


def _filter_kind(v: Any) -> str:
    if isinstance(v, dict):
        return "group" if "type" in v or "filters" in v else "field"
    return "group" if isinstance(v, GroupFilter) else "field"


Filter = Annotated[
    Annotated[FieldFilter, Tag("field")] | Annotated[GroupFilter, Tag("group")],
    Discriminator(_filter_kind),
]

GroupFilter.model_rebuild()


# --- transform ---------------------------------------------------------------------------------


def _check_path(p: str) -> str:
    if not p or len(p) > 512 or any(seg == "" for seg in p.split(".")):
        raise ValueError(f"{p!r} is not a field path (keys separated by dots, none empty)")
    return p


class Transform(Request):
    """Applied to the event's ``data`` when it is an object, in this order: rename, remove, add.
    Paths are keys separated by dots (``customer.name``)."""

    rename_fields: dict[str, str] = Field(default_factory=dict, description="old path -> new path")
    remove_fields: list[str] = Field(default_factory=list)
    add_fields: dict[str, Any] = Field(default_factory=dict, description="path -> value (set, replacing)")

    @field_validator("rename_fields")
    @classmethod
    def _renames(cls, v: dict[str, str]) -> dict[str, str]:
        for old, new in v.items():
            _check_path(old)
            _check_path(new)
        return v

    @field_validator("remove_fields")
    @classmethod
    def _removes(cls, v: list[str]) -> list[str]:
        for p in v:
            _check_path(p)
        return v

    @field_validator("add_fields")
    @classmethod
    def _adds(cls, v: dict[str, Any]) -> dict[str, Any]:
        for p in v:
            _check_path(p)
        try:  # derived events travel as msgpack: 64-bit integers at most
            msgpack.packb(v, use_bin_type=True)
        except (OverflowError, TypeError, ValueError):
            raise ValueError("add_fields values must be JSON with integers of at most 64 bits") from None
        return v


# --- requests ----------------------------------------------------------------------------------


def _walk(f: FieldFilter | GroupFilter, depth: int, counter: list[int]) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"filter nests deeper than {MAX_FILTER_DEPTH} groups")
    if isinstance(f, GroupFilter):
        for sub in f.filters:
            _walk(sub, depth + 1, counter)
    else:
        counter[0] += 1
        if counter[0] > MAX_FILTER_LEAVES:
            raise ValueError(f"filter has more than {MAX_FILTER_LEAVES} conditions")


class CreateLinkRequest(Request):
    """``create_link(store, spec)``: the spec's keys are the request's fields."""

    name: LinkName
    source: Source
    filter: Filter | None = None
    transform: Transform | None = None
    backfill: bool = Field(default=True, description="copy the source's existing events first")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @model_validator(mode="after")
    def _check(self) -> CreateLinkRequest:
        if self.filter is not None:
            _walk(self.filter, 1, [0])
        return self


class LinkNameRequest(Request):
    name: LinkName


class DeleteLinkRequest(Request):
    name: LinkName
    delete_stream: bool = Field(default=False, description="also delete the derived stream $link:<name>")


class ListLinksRequest(Request):
    pass


# --- replies -------------------------------------------------------------------------------------


class LinkInfo(Response):
    """A link: its definition and its progress (``link_info``)."""

    name: str
    stream_id: str = Field(description="the derived stream, $link:<name>")
    source: dict[str, Any]
    filter: dict[str, Any] | None
    transform: dict[str, Any] | None
    backfill: bool
    status: Literal["running", "stopped", "error"]
    error: str | None = Field(default=None, description="why the link stopped with status error")
    active: bool = Field(description="a service instance is forwarding it right now")
    events_processed: int = Field(description="source events forwarded to the derived stream")
    events_filtered: int = Field(description="source events the filter left out")
    lag: int = Field(description="appends of the source not processed yet (for pattern/all: of the whole store)")
    last_event: dict[str, Any] | None = Field(
        description="the last forwarded event: source stream_id, version and event_id, its version in "
        "the derived stream, and when it was forwarded (ms)"
    )
    created_at: int = Field(description="ms since epoch")


class LinksResponse(Response):
    links: list[LinkInfo]
