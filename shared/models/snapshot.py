"""Wire models of the snapshot service (``<prefix>.api.<store>.snapshot.<op>``), SPEC.md §5.

A snapshot is keyed by (``source_uuid``, ``stream_uuid``, ``version``); field names are the
seed's arguments (``record_snapshot(store, source_uuid, stream_uuid, version, record)``).
Snapshots larger than one NATS message go through the chunked form of ``record`` and
``read_chunk`` (docs/api/snapshot.md#chunked-snapshots).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, Field, field_validator, model_validator

from esdb_gater.shared.models.common import Request, Response
from esdb_gater.shared.models.stream import is_json_content_type

__all__ = [
    "MAX_CHUNKS",
    "UPLOAD_ID_PATTERN",
    "ChunkInfo",
    "DeleteSnapshotRequest",
    "ListSnapshotsRequest",
    "ReadChunkRequest",
    "ReadChunkResponse",
    "ReadSnapshotRequest",
    "RecordSnapshotRequest",
    "RecordSnapshotResponse",
    "Snapshot",
    "SnapshotsResponse",
]

MAX_UUID_BYTES: Final = 256
MAX_CHUNKS: Final = 4096
MAX_VERSION: Final = 2**63 - 1
UPLOAD_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{8,64}$"


def _check_uuid(value: str) -> str:
    n = len(value.encode("utf-8", "surrogatepass"))
    if n == 0:
        raise ValueError("must not be empty")
    if n > MAX_UUID_BYTES:
        raise ValueError(f"is {n} bytes; at most {MAX_UUID_BYTES}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8") from None
    return value


SnapshotUuid = Annotated[
    str, AfterValidator(_check_uuid), Field(description="any UTF-8 text of 1 to 256 bytes; used exactly as given")
]
SnapshotVersion = Annotated[int, Field(ge=0, le=MAX_VERSION, description="the aggregate version the snapshot is at")]


def _bytes_of(value: Any, what: str) -> bytes:
    """Bytes from msgpack ``bin`` or base64 text (JSON)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} must be base64 text (or msgpack bin)") from None
    raise ValueError(f"{what} must be bytes: base64 text in JSON, bin in msgpack")


class RecordSnapshotRequest(Request):
    """Plain form: ``record`` (the snapshot's data). Chunked form: ``upload_id``,
    ``chunk_index``, ``chunk_count`` and ``chunk`` instead of ``record``; ``metadata`` and
    ``data_content_type`` are taken from the last chunk."""

    source_uuid: SnapshotUuid
    stream_uuid: SnapshotUuid
    version: SnapshotVersion
    record: Any = Field(
        default=None,
        validation_alias=AliasChoices("record", "data"),
        description="the snapshot's data: any JSON value, or bytes for a non-JSON data_content_type",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    data_content_type: str = Field(default="application/json", min_length=1, max_length=128)
    upload_id: str | None = Field(
        default=None,
        pattern=UPLOAD_ID_PATTERN,
        description="chunked form: the caller's id of this upload, e.g. a UUID without dashes",
    )
    chunk_index: int | None = Field(default=None, ge=0, description="chunked form: 0-based, sent in order")
    chunk_count: int | None = Field(default=None, ge=1, le=MAX_CHUNKS, description="chunked form: number of chunks")
    chunk: bytes | None = Field(default=None, description="chunked form: the bytes of this chunk (base64 in JSON)")
    # read-only fields of a read snapshot, accepted and ignored so a read snapshot can be sent back
    timestamp: Any = Field(default=None, exclude=True)
    size: Any = Field(default=None, exclude=True)
    chunks: Any = Field(default=None, exclude=True)

    @field_validator("chunk", mode="before")
    @classmethod
    def _chunk_bytes(cls, v: Any) -> Any:
        return None if v is None else _bytes_of(v, "chunk")

    @model_validator(mode="after")
    def _form(self) -> RecordSnapshotRequest:
        parts: dict[str, object] = {
            "upload_id": self.upload_id,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "chunk": self.chunk,
        }
        given = [k for k, v in parts.items() if v is not None]
        if given:
            missing = [k for k, v in parts.items() if v is None]
            if missing:
                raise ValueError(f"the chunked form also needs {', '.join(missing)}")
            if "record" in self.model_fields_set:
                raise ValueError("send either record or the chunk fields, not both")
            assert self.chunk_index is not None and self.chunk_count is not None
            if self.chunk_index >= self.chunk_count:
                raise ValueError("chunk_index must be less than chunk_count")
            return self
        if "record" not in self.model_fields_set:
            raise ValueError("record is required (or the chunked form: upload_id, chunk_index, chunk_count, chunk)")
        if is_json_content_type(self.data_content_type):
            if isinstance(self.record, bytes):
                raise ValueError("binary record needs a non-JSON data_content_type, e.g. application/octet-stream")
        elif self.record is not None:
            self.record = _bytes_of(self.record, f"record (data_content_type {self.data_content_type!r})")
        return self


class RecordSnapshotResponse(BaseModel):
    source_uuid: str
    stream_uuid: str
    version: int
    complete: bool = Field(description="true once the snapshot is stored (always for the plain form)")
    chunks_received: int = Field(description="chunked form: chunks stored so far; 1 for the plain form")
    size: int | None = Field(description="bytes stored once complete, else null")
    timestamp: int | None = Field(description="ms since epoch of the stored snapshot once complete, else null")


class ReadSnapshotRequest(Request):
    source_uuid: SnapshotUuid
    stream_uuid: SnapshotUuid
    version: SnapshotVersion | Literal["latest"] = Field(
        default="latest", description='a version, or "latest" for the highest one'
    )


class ChunkInfo(BaseModel):
    """Where a chunked snapshot's data is: fetch chunks 0..count-1 with ``read_chunk``."""

    upload_id: str = Field(description="pass to read_chunk; changes when the snapshot is recorded again")
    count: int = Field(description="number of chunks")
    size: int = Field(description="total bytes")
    digest: str = Field(description='"SHA-256=" + URL-safe base64 of the SHA-256 of all bytes (ADR-20 form)')


class Snapshot(Response):
    """A stored snapshot (SPEC.md §5). ``data`` is null and ``chunks`` is set when the snapshot
    is stored in chunks (``read_chunk`` fetches them)."""

    source_uuid: str
    stream_uuid: str
    version: int
    data: Any
    metadata: dict[str, Any]
    timestamp: int = Field(description="ms since epoch when it was recorded")
    data_content_type: str = "application/json"
    size: int = Field(description="bytes of the stored data (its JSON text for JSON data)")
    chunks: ChunkInfo | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Snapshot:
        """Wrap a Snapshot-shaped dict read from the store without validating (or copying) its data."""
        return cls.model_construct(**row)

    def to_wire(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in type(self).model_fields}
        if isinstance(self.chunks, ChunkInfo):
            out["chunks"] = self.chunks.model_dump()
        return out


class ReadChunkRequest(Request):
    source_uuid: SnapshotUuid
    stream_uuid: SnapshotUuid
    version: SnapshotVersion
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN, description="chunks.upload_id of the read reply")
    chunk_index: int = Field(ge=0, lt=MAX_CHUNKS)


class ReadChunkResponse(BaseModel):
    chunk_index: int
    chunk: bytes = Field(description="the chunk's bytes (base64 in JSON, bin in msgpack)")


class DeleteSnapshotRequest(Request):
    source_uuid: SnapshotUuid
    stream_uuid: SnapshotUuid
    version: SnapshotVersion


class ListSnapshotsRequest(Request):
    source_uuid: SnapshotUuid
    stream_uuid: SnapshotUuid
    include_data: bool = Field(default=True, description="false: every snapshot's data is null (cheaper)")


class SnapshotsResponse(Response):
    snapshots: list[Snapshot] = Field(description="ascending by version")

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> SnapshotsResponse:
        return cls.model_construct(snapshots=rows)  # type: ignore[arg-type]  # dicts stand in for Snapshot

    def to_wire(self) -> dict[str, Any]:
        return {"snapshots": [s if isinstance(s, dict) else s.model_dump(mode="python") for s in self.snapshots]}
