"""One async function per subject of the subscription service. No bytes, headers or JetStream here."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from esdb_gater.services.subscription.driver import Supervisor
from esdb_gater.services.subscription.store import Definition, SubscriptionStore, subscription_key
from esdb_gater.shared.core.errors import GatewayError, SubscriptionNotFoundError, UnavailableError
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.subscription import (
    AckRequest,
    GetRequest,
    ListRequest,
    ReplayParkedRequest,
    ReplayParkedResponse,
    SaveRequest,
    SubscriptionInfo,
    SubscriptionKeyRequest,
    SubscriptionsResponse,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SubCtx:
    store: str
    subs: SubscriptionStore
    supervisor: Supervisor


async def _info(ctx: SubCtx, d: Definition) -> SubscriptionInfo:
    floor, lag = await ctx.subs.consumer_progress(d)
    checkpoint: int | None = None
    if floor > 0:
        checkpoint = floor
        if d.type == "stream" and d.selector != "$all":
            checkpoint = await ctx.subs.last_version_at(d.store, floor)
    lag_seconds = 0.0
    if lag > 0:
        written = await ctx.subs.next_commit_time(d, floor)
        if written is not None:
            lag_seconds = max(0.0, time.time() - written)
    holder = await ctx.subs.holder(d)
    return SubscriptionInfo(
        type=d.type,
        selector=d.selector,
        name=d.name,
        key=d.key,
        subscriber=d.subscriber,
        start_from=d.start_from,
        created_at=d.created_at,
        checkpoint=checkpoint,
        checkpoint_position=floor,
        lag_events=lag,
        lag_seconds=round(lag_seconds, 3),
        parked=await ctx.subs.parked_count(d),
        max_in_flight=d.max_in_flight,
        ack_wait_ms=d.ack_wait_ms,
        max_deliver=d.max_deliver,
        backoff_ms=d.backoff_ms,
        codec=d.codec,
        active=holder is not None,
        delivery=d.delivery,
        batch_max=d.batch_max,
        ack=d.ack,
    )


async def save(req: SaveRequest, ctx: SubCtx) -> SubscriptionInfo:
    # never deliver into the gateway's own subjects or a system one (ADR 0013)
    ctx.subs.subjects.check_target(req.subscriber, "subscriber", ctx.subs.settings.security.target_allow.get(ctx.store))
    d = await ctx.subs.create(ctx.store, req)
    ctx.supervisor.poke()
    return await _info(ctx, d)


async def remove(req: SubscriptionKeyRequest, ctx: SubCtx) -> OkResponse:
    await ctx.subs.ensure_store(ctx.store)
    await ctx.subs.delete(ctx.store, subscription_key(req.type, req.selector, req.name))
    ctx.supervisor.poke()
    return OkResponse()


async def _find(ctx: SubCtx, req: GetRequest) -> Definition:
    await ctx.subs.ensure_store(ctx.store)
    if req.type is not None and req.selector is not None:
        d = await ctx.subs.get_def(ctx.store, subscription_key(req.type, req.selector, req.name))
        found = [d] if d is not None else []
    else:
        found = [
            d
            for d in await ctx.subs.definitions(ctx.store)
            if d.name == req.name and (req.type is None or d.type == req.type)
        ]
        found.sort(key=lambda d: d.created_at)
    if not found:
        raise SubscriptionNotFoundError(f"no subscription named {req.name!r}", details={"name": req.name})
    return found[0]


async def get(req: GetRequest, ctx: SubCtx) -> SubscriptionInfo:
    return await _info(ctx, await _find(ctx, req))


async def list_(req: ListRequest, ctx: SubCtx) -> SubscriptionsResponse:
    await ctx.subs.ensure_store(ctx.store)
    defs = sorted(await ctx.subs.definitions(ctx.store), key=lambda d: (d.name, d.created_at))
    return SubscriptionsResponse(subscriptions=[await _info(ctx, d) for d in defs])


async def _at_driver(d: Definition, call: Awaitable[T]) -> T:
    """A call forwarded to the instance delivering ``d``; ``unavailable`` naming the
    subscription when no instance delivers it."""
    try:
        return await call
    except UnavailableError:
        raise UnavailableError(
            f"subscription {d.name!r} is not being delivered right now (no instance holds it); try again",
            details={"name": d.name, "key": d.key},
        ) from None


async def ack(req: AckRequest, ctx: SubCtx) -> OkResponse:
    """Seed: ``ack_event(store, stream_id, subscription_name, event_number)``. Goes to the
    instance delivering each subscription of that name."""
    await ctx.subs.ensure_store(ctx.store)
    # the supervisor's copy first (acks are frequent); the bucket when it does not know the name
    defs = [d for (st, _), d in ctx.supervisor.defs.items() if st == ctx.store and d.name == req.subscription_name]
    if not defs:
        defs = [d for d in await ctx.subs.definitions(ctx.store) if d.name == req.subscription_name]
    if not defs:
        raise SubscriptionNotFoundError(
            f"no subscription named {req.subscription_name!r}", details={"name": req.subscription_name}
        )
    errors: list[GatewayError] = []
    for d in defs:
        try:
            await _at_driver(d, ctx.subs.forward_ack(d, req.stream_id, req.event_number, req.cumulative))
        except GatewayError as exc:
            errors.append(exc)
    if errors and len(errors) == len(defs):
        raise errors[0]
    return OkResponse()


async def replay_parked(req: ReplayParkedRequest, ctx: SubCtx) -> ReplayParkedResponse:
    d = await _find(ctx, req)
    return ReplayParkedResponse(replayed=await _at_driver(d, ctx.subs.forward_replay(d)))
