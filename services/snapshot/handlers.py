"""One async function per subject of the snapshot service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass

from esdb_gater.services.snapshot.store import SnapshotStore, Upload
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.snapshot import (
    DeleteSnapshotRequest,
    ListSnapshotsRequest,
    ReadChunkRequest,
    ReadChunkResponse,
    ReadSnapshotRequest,
    RecordSnapshotRequest,
    RecordSnapshotResponse,
    Snapshot,
    SnapshotsResponse,
)


@dataclass(frozen=True, slots=True)
class SnapshotCtx:
    store: str
    snapshots: SnapshotStore


async def record(req: RecordSnapshotRequest, ctx: SnapshotCtx) -> RecordSnapshotResponse:
    ids = {"source_uuid": req.source_uuid, "stream_uuid": req.stream_uuid, "version": req.version}
    if req.upload_id is not None:
        assert req.chunk_index is not None and req.chunk_count is not None and req.chunk is not None
        up = Upload(
            req.source_uuid,
            req.stream_uuid,
            req.version,
            req.upload_id,
            req.chunk_index,
            req.chunk_count,
            req.chunk,
            req.metadata,
            req.data_content_type,
        )
        r = await ctx.snapshots.record_chunk(ctx.store, up)
        row = r.row or {}
        return RecordSnapshotResponse(
            **ids,
            complete=r.complete,
            chunks_received=r.received,
            size=row.get("size"),
            timestamp=row.get("timestamp"),
        )
    row = await ctx.snapshots.record(
        ctx.store, req.source_uuid, req.stream_uuid, req.version, req.record, req.metadata, req.data_content_type
    )
    return RecordSnapshotResponse(**ids, complete=True, chunks_received=1, size=row["size"], timestamp=row["timestamp"])


async def read(req: ReadSnapshotRequest, ctx: SnapshotCtx) -> Snapshot:
    version = None if req.version == "latest" else req.version
    row = await ctx.snapshots.read(ctx.store, req.source_uuid, req.stream_uuid, version)
    return Snapshot.from_row(row)


async def read_chunk(req: ReadChunkRequest, ctx: SnapshotCtx) -> ReadChunkResponse:
    data = await ctx.snapshots.read_chunk(
        ctx.store, req.source_uuid, req.stream_uuid, req.version, req.upload_id, req.chunk_index
    )
    return ReadChunkResponse(chunk_index=req.chunk_index, chunk=data)


async def delete(req: DeleteSnapshotRequest, ctx: SnapshotCtx) -> OkResponse:
    await ctx.snapshots.delete(ctx.store, req.source_uuid, req.stream_uuid, req.version)
    return OkResponse()


async def list_(req: ListSnapshotsRequest, ctx: SnapshotCtx) -> SnapshotsResponse:
    rows = await ctx.snapshots.list(ctx.store, req.source_uuid, req.stream_uuid, req.include_data)
    return SnapshotsResponse.from_rows(rows)
