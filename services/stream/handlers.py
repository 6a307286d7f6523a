"""One async function per subject of the stream service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.stream.store import EventStore
from shared.models.common import OkResponse
from shared.models.stream import (
    AppendRequest,
    AppendResponse,
    BackwardRequest,
    CreateStoreRequest,
    DeleteRequest,
    EventsResponse,
    ExistsRequest,
    ExistsResponse,
    ForwardRequest,
    ListRequest,
    ListResponse,
    ReadRangeRequest,
    ReadRequest,
    ReadUntilRequest,
    StoreInfoRequest,
    StoreInfoResponse,
    VersionAtRequest,
    VersionRequest,
    VersionResponse,
)


@dataclass(frozen=True, slots=True)
class StreamCtx:
    store: str
    events: EventStore


def _events(rows: list[dict[str, Any]]) -> EventsResponse:
    return EventsResponse.from_rows(rows)


async def append(req: AppendRequest, ctx: StreamCtx) -> AppendResponse:
    r = await ctx.events.append(ctx.store, req.stream_id, req.expected_version, req.events)
    return AppendResponse(version=r.version, position=r.position, count=r.count)


async def read(req: ReadRequest, ctx: StreamCtx) -> EventsResponse:
    return _events(await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, req.direction))


async def forward(req: ForwardRequest, ctx: StreamCtx) -> EventsResponse:
    return _events(await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, "forward"))


async def backward(req: BackwardRequest, ctx: StreamCtx) -> EventsResponse:
    return _events(await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, "backward"))


async def version(req: VersionRequest, ctx: StreamCtx) -> VersionResponse:
    return VersionResponse(version=await ctx.events.version(ctx.store, req.stream_id))


async def exists(req: ExistsRequest, ctx: StreamCtx) -> ExistsResponse:
    return ExistsResponse(exists=await ctx.events.version(ctx.store, req.stream_id) >= 0)


async def list_(req: ListRequest, ctx: StreamCtx) -> ListResponse:
    streams, nxt = await ctx.events.list_streams(ctx.store, req.cursor, req.limit)
    return ListResponse(streams=streams, next=nxt)


async def delete(req: DeleteRequest, ctx: StreamCtx) -> OkResponse:
    await ctx.events.delete(ctx.store, req.stream_id)
    return OkResponse()


async def read_until(req: ReadUntilRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read_time_range(ctx.store, req.stream_id, None, req.timestamp, req.direction, req.limit)
    return _events(rows)


async def read_range(req: ReadRangeRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read_time_range(ctx.store, req.stream_id, req.from_ts, req.to_ts, req.direction, req.limit)
    return _events(rows)


async def version_at(req: VersionAtRequest, ctx: StreamCtx) -> VersionResponse:
    return VersionResponse(version=await ctx.events.version_at(ctx.store, req.stream_id, req.timestamp))


async def store_create(req: CreateStoreRequest, ctx: StreamCtx) -> StoreInfoResponse:
    base = ctx.events.configured(ctx.store)
    cfg = base.model_copy(update=req.model_dump(exclude_none=True))
    _, created = await ctx.events.create_store(ctx.store, cfg)
    return await _store_info(ctx, created)


async def store_info(req: StoreInfoRequest, ctx: StreamCtx) -> StoreInfoResponse:
    return await _store_info(ctx, False)


async def _store_info(ctx: StreamCtx, created: bool) -> StoreInfoResponse:
    info, messages, subjects = await ctx.events.store_stats(ctx.store)
    c = info.config
    return StoreInfoResponse(
        store=ctx.store,
        replicas=c.replicas,
        storage=c.storage,
        max_age_s=c.max_age_s,
        max_bytes=c.max_bytes,
        duplicate_window_s=c.duplicate_window_s,
        events=messages,
        streams=subjects,
        created=created,
    )
