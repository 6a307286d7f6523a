"""One async function per subject of the link service. No bytes, headers or JetStream here."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from esdb_gater.services.link.driver import Supervisor
from esdb_gater.services.link.store import Definition, LinkStore
from esdb_gater.shared.core.errors import InvalidRequestError, NotFoundError
from esdb_gater.shared.core.telemetry import emit
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.link import (
    DERIVED_PREFIX,
    CreateLinkRequest,
    DeleteLinkRequest,
    LinkInfo,
    LinkNameRequest,
    LinksResponse,
    ListLinksRequest,
    StreamSource,
)

MAX_CHAIN: int = 64


@dataclass(frozen=True, slots=True)
class LinkCtx:
    store: str
    links: LinkStore
    supervisor: Supervisor
    lease_ttl_s: float


async def _info(ctx: LinkCtx, d: Definition) -> LinkInfo:
    stats = await ctx.links.stats(d)
    lag = await ctx.links.lag(d, stats)
    holder = await ctx.links.holder(d)
    return LinkInfo(
        name=d.name,
        stream_id=d.stream_id,
        source=d.source,
        filter=d.filter,
        transform=d.transform,
        backfill=d.backfill,
        status=d.status,
        error=d.error,
        active=holder is not None,
        events_processed=stats.processed,
        events_filtered=stats.filtered,
        lag=lag,
        last_event=stats.last_event,
        created_at=d.created_at,
    )


def _telemetry(ctx: LinkCtx, what: str, name: str) -> None:
    emit(("link", what), {"system_time": time.time_ns()}, {"store_id": ctx.store, "link_name": name})


async def _check_source(ctx: LinkCtx, req: CreateLinkRequest) -> None:
    """A link may read another link's stream (a chain), but never its own, directly or around
    a cycle of links."""
    src = req.source
    if not isinstance(src, StreamSource) or not src.stream_id.startswith(DERIVED_PREFIX):
        return
    seen = {req.name}
    current = src.stream_id
    for _ in range(MAX_CHAIN):
        upstream = current[len(DERIVED_PREFIX) :]
        if upstream in seen:
            raise InvalidRequestError(
                "the link would read its own derived stream (directly or through other links)",
                details={"field": "source.stream_id", "reason": "cycle", "link": upstream},
            )
        seen.add(upstream)
        try:
            d = await ctx.links.get(ctx.store, upstream)
        except NotFoundError:
            return
        if d.source["type"] != "stream" or not str(d.source["stream_id"]).startswith(DERIVED_PREFIX):
            return
        current = str(d.source["stream_id"])


async def create(req: CreateLinkRequest, ctx: LinkCtx) -> LinkInfo:
    await _check_source(ctx, req)
    d = await ctx.links.create(ctx.store, req)
    _telemetry(ctx, "created", d.name)
    return await _info(ctx, d)


def _released(expires: float | None, ttl_s: float) -> bool:
    """The driving instance gave the lease up (it stops forwarding before it does), or the lease
    ran out a whole TTL ago: a live holder renews it every quarter TTL, so its holder is gone."""
    return expires is None or expires == 0 or time.time() > expires + ttl_s


async def _wait_released(ctx: LinkCtx, d: Definition) -> None:
    """Wait until no instance forwards the link (bounded: a holder that died leaves its lease to
    run out)."""
    deadline = time.monotonic() + 2 * ctx.lease_ttl_s + 20.0
    while time.monotonic() < deadline:
        if _released(await ctx.links.lease_expiry(d), ctx.lease_ttl_s):
            return
        await asyncio.sleep(0.05)


async def start(req: LinkNameRequest, ctx: LinkCtx) -> LinkInfo:
    await ctx.links.ensure_store(ctx.store)
    d = await ctx.links.set_status(ctx.store, req.name, "running")
    ctx.supervisor.poke()
    _telemetry(ctx, "started", d.name)
    return await _info(ctx, d)


async def stop(req: LinkNameRequest, ctx: LinkCtx) -> LinkInfo:
    """Returns once no instance forwards the link any more (or after a lease's time)."""
    await ctx.links.ensure_store(ctx.store)
    d = await ctx.links.set_status(ctx.store, req.name, "stopped")
    ctx.supervisor.poke()
    await _wait_released(ctx, d)
    _telemetry(ctx, "stopped", d.name)
    return await _info(ctx, d)


async def delete(req: DeleteLinkRequest, ctx: LinkCtx) -> OkResponse:
    await ctx.links.ensure_store(ctx.store)
    d = await ctx.links.get(ctx.store, req.name)
    await ctx.links.delete(d)
    ctx.supervisor.poke()
    await _wait_released(ctx, d)
    await ctx.links.drop_lease(d)
    if req.delete_stream:
        await ctx.links.delete_derived(d)
        await ctx.links.drop_checkpoint(d)
    _telemetry(ctx, "deleted", d.name)
    return OkResponse()


async def get(req: LinkNameRequest, ctx: LinkCtx) -> LinkInfo:
    await ctx.links.ensure_store(ctx.store)
    return await _info(ctx, await ctx.links.get(ctx.store, req.name))


async def info(req: LinkNameRequest, ctx: LinkCtx) -> LinkInfo:
    return await get(req, ctx)


async def list_(req: ListLinksRequest, ctx: LinkCtx) -> LinksResponse:
    await ctx.links.ensure_store(ctx.store)
    defs = sorted(await ctx.links.definitions(ctx.store), key=lambda d: d.name.encode("utf-8"))
    return LinksResponse(links=[await _info(ctx, d) for d in defs])


__all__ = ["LinkCtx", "create", "delete", "get", "info", "list_", "start", "stop"]
