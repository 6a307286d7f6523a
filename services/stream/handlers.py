"""One async function per subject of the stream service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esdb_gater.services.stream.multi import appender
from esdb_gater.services.stream.readall import AllReader
from esdb_gater.services.stream.store import EventStore
from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.core.patterns import run_matching
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.stream import (
    NOTIFICATION_SHIFT,
    AppendMultiRequest,
    AppendMultiResponse,
    AppendMultiResult,
    AppendRequest,
    AppendResponse,
    BackwardRequest,
    CheckpointRequest,
    CheckpointResponse,
    CreateStoreRequest,
    DeleteRequest,
    EventsResponse,
    ExistsRequest,
    ExistsResponse,
    ForwardRequest,
    ListRequest,
    ListResponse,
    ReadAllRequest,
    ReadAllResponse,
    ReadRangeRequest,
    ReadRequest,
    ReadUntilRequest,
    ReindexRequest,
    ReindexResponse,
    StoreInfoRequest,
    StoreInfoResponse,
    VersionAtRequest,
    VersionRequest,
    VersionResponse,
)
from esdb_gater.shared.upcasting.registry import SchemaRegistry


@dataclass(frozen=True, slots=True)
class StreamCtx:
    store: str
    events: EventStore
    schemas: SchemaRegistry | None = None  # validates appends and upcasts reads (shared/upcasting/registry.py)


async def _read(ctx: StreamCtx, raw: bool, rows: list[dict[str, Any]]) -> EventsResponse:
    """The read reply, upcast to the current schema versions unless the request asked for raw
    events. A dict lookup per event when its type has no schema."""
    if not raw and rows and ctx.schemas is not None:
        schemas = ctx.schemas.loaded(ctx.store) or await ctx.schemas.schemas(ctx.store)
        schemas.upcast(rows)
    return EventsResponse.from_rows(rows)


RESERVED_PREFIX = "$"  # stream ids the services write: $link:<name> (ADR 0016)


def _not_reserved(stream_id: str) -> None:
    """Clients never write a stream whose id starts with ``$``; the services do, through their
    internal subjects (``<prefix>.internal.<store>.stream.<op>``, ADR 0016). Reads stay open."""
    if stream_id.startswith(RESERVED_PREFIX):
        raise InvalidRequestError(
            f"stream ids starting with {RESERVED_PREFIX!r} are written only by the services",
            details={"field": "stream_id", "reason": "reserved", "stream_id": stream_id},
        )


async def append(req: AppendRequest, ctx: StreamCtx) -> AppendResponse:
    _not_reserved(req.stream_id)
    return await append_internal(req, ctx)


async def append_internal(req: AppendRequest, ctx: StreamCtx) -> AppendResponse:
    """An append from another service (the link service's ``$link:`` streams)."""
    if ctx.schemas is not None:
        await ctx.events.store(ctx.store)  # store_not_found before anything else
        schemas = ctx.schemas.loaded(ctx.store) or await ctx.schemas.schemas(ctx.store)
        if schemas.matches_patterns(req.events):  # RE2 releases the GIL: match off the event loop
            await run_matching(schemas.check_append, req.events)
        else:
            schemas.check_append(req.events)  # invalid_request naming the field; nothing written
    r = await ctx.events.append(ctx.store, req.stream_id, req.expected_version, req.events)
    return AppendResponse(version=r.version, position=r.position, count=r.count)


async def append_multi(req: AppendMultiRequest, ctx: StreamCtx) -> AppendMultiResponse:
    """Appends to several streams (and a checkpoint), all stored or none (services/stream/multi.py)."""
    for a in req.appends:
        _not_reserved(a.stream_id)
    if ctx.schemas is not None and req.appends:
        await ctx.events.store(ctx.store)  # store_not_found before anything else
        schemas = ctx.schemas.loaded(ctx.store) or await ctx.schemas.schemas(ctx.store)
        events = [e for a in req.appends for e in a.events]
        if schemas.matches_patterns(events):
            await run_matching(schemas.check_append, events)
        else:
            schemas.check_append(events)
    r = await appender(ctx.events).append_multi(ctx.store, req.appends, req.checkpoint)
    return AppendMultiResponse(
        results=[
            AppendMultiResult(
                stream_id=a.stream_id,
                version=x.version,
                position=x.position,
                count=x.count,
                first_notification_id=x.position << NOTIFICATION_SHIFT,
            )
            for a, x in zip(req.appends, r.results, strict=True)
        ],
        position=r.position,
    )


async def checkpoint(req: CheckpointRequest, ctx: StreamCtx) -> CheckpointResponse:
    position, _ = await appender(ctx.events).checkpoint(ctx.store, req.name)
    return CheckpointResponse(name=req.name, position=position)


async def read_all(req: ReadAllRequest, ctx: StreamCtx) -> ReadAllResponse:
    """Every event of the store in log order, by pages (services/stream/readall.py)."""
    page = await AllReader(ctx.events).read_all(ctx.store, req)
    rows = page.events
    if not req.raw and rows and ctx.schemas is not None:
        schemas = ctx.schemas.loaded(ctx.store) or await ctx.schemas.schemas(ctx.store)
        schemas.upcast(rows)
    return ReadAllResponse.from_rows(rows, page.next, page.last_notification_id)


async def read(req: ReadRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, req.direction)
    return await _read(ctx, req.raw, rows)


async def forward(req: ForwardRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, "forward")
    return await _read(ctx, req.raw, rows)


async def backward(req: BackwardRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read(ctx.store, req.stream_id, req.start_version, req.count, "backward")
    return await _read(ctx, req.raw, rows)


async def version(req: VersionRequest, ctx: StreamCtx) -> VersionResponse:
    return VersionResponse(version=await ctx.events.version(ctx.store, req.stream_id))


async def exists(req: ExistsRequest, ctx: StreamCtx) -> ExistsResponse:
    return ExistsResponse(exists=await ctx.events.version(ctx.store, req.stream_id) >= 0)


async def list_(req: ListRequest, ctx: StreamCtx) -> ListResponse:
    streams, nxt = await ctx.events.list_streams(ctx.store, req.cursor, req.limit)
    return ListResponse(streams=streams, next=nxt)


async def delete(req: DeleteRequest, ctx: StreamCtx) -> OkResponse:
    _not_reserved(req.stream_id)
    return await delete_internal(req, ctx)


async def delete_internal(req: DeleteRequest, ctx: StreamCtx) -> OkResponse:
    await ctx.events.delete(ctx.store, req.stream_id)
    return OkResponse()


async def read_until(req: ReadUntilRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read_time_range(ctx.store, req.stream_id, None, req.timestamp, req.direction, req.limit)
    return await _read(ctx, req.raw, rows)


async def read_range(req: ReadRangeRequest, ctx: StreamCtx) -> EventsResponse:
    rows = await ctx.events.read_time_range(ctx.store, req.stream_id, req.from_ts, req.to_ts, req.direction, req.limit)
    return await _read(ctx, req.raw, rows)


async def version_at(req: VersionAtRequest, ctx: StreamCtx) -> VersionResponse:
    return VersionResponse(version=await ctx.events.version_at(ctx.store, req.stream_id, req.timestamp))


async def store_create(req: CreateStoreRequest, ctx: StreamCtx) -> StoreInfoResponse:
    base = ctx.events.configured(ctx.store)
    cfg = base.model_copy(update=req.model_dump(exclude_none=True))
    if cfg.max_age_s and cfg.duplicate_window_s > cfg.max_age_s:
        # JetStream refuses a duplicate window longer than the stream's max age
        if req.duplicate_window_s is not None:
            raise InvalidRequestError(
                "duplicate_window_s must not exceed max_age_s",
                details={"field": "duplicate_window_s", "reason": "exceeds max_age_s"},
            )
        cfg = cfg.model_copy(update={"duplicate_window_s": cfg.max_age_s})  # the default shrinks to fit
    _, created = await ctx.events.create_store(ctx.store, cfg)
    return await _store_info(ctx, created)


async def store_create_on_first_use(req: CreateStoreRequest, ctx: StreamCtx) -> StoreInfoResponse:
    """Another service's write needs the store (``subscription.save``, ``link.create``, a
    snapshot or schema write): made as on a first append, so only when ``auto_create_stores`` is
    on, with the configured defaults, and counted against ``quotas.auto_created_stores``
    (ADR 0016). Served on the services-only subject."""
    await ctx.events.store(ctx.store)
    return await _store_info(ctx, False)


async def store_info(req: StoreInfoRequest, ctx: StreamCtx) -> StoreInfoResponse:
    return await _store_info(ctx, False)


async def store_reindex(req: ReindexRequest, ctx: StreamCtx) -> ReindexResponse:
    r = await ctx.events.reindex(ctx.store)
    return ReindexResponse(store=ctx.store, scanned=r.scanned, indexed=r.indexed, checkpoint=r.checkpoint)


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
