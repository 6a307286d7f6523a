"""One async function per subject of the channel service. No bytes, headers or JetStream here.

Publish checks, in order: the channel exists; its priority is not being shed; the capability
token (per the channel's mode); the HMAC signature (stateless part). The rest runs as a job at
the channel's priority: the per-topic rate limit, the replay check, delivery. A message that
fails the signature check does not use rate budget; one that is rate limited does not burn its
signature (it may be sent again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from esdb_gater.services.channel.dispatch import Dispatcher
from esdb_gater.services.channel.policy import Authorizer, ChannelTable, HmacPolicy
from esdb_gater.services.channel.store import ChannelStore
from esdb_gater.shared.core.errors import InvalidRequestError, RateLimitedError
from esdb_gater.shared.models.channel import (
    ChannelsRequest,
    ChannelsResponse,
    HistoryRequest,
    HistoryResponse,
    PublishRequest,
    PublishResponse,
    SubscribeRequest,
    SubscribeResponse,
    UnsubscribeRequest,
)
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.security import signing as security

_PUBLISHED: Final = PublishResponse()  # the reply to every publish on a non-durable channel (frozen)


@dataclass(frozen=True, slots=True)
class ChannelCtx:
    table: ChannelTable
    store: ChannelStore
    dispatcher: Dispatcher
    auth: Authorizer
    hmac: HmacPolicy
    subscribe_max_ttl_s: int


async def publish(req: PublishRequest, ctx: ChannelCtx) -> PublishResponse:
    ch = ctx.table.get(req.channel)
    ctx.dispatcher.admit(ch.priority, ch.name)
    ctx.auth.check(ch, req.topic, "channel/publish", req.capability_token)
    signed = ctx.hmac.check(ch, req.message)
    prepared = ctx.store.prepare(ch, req.topic, req.message)

    async def work() -> int | None:
        if ch.rate_limit and not await ctx.store.allow(ch.name, req.topic, ch.rate_limit):
            raise RateLimitedError(
                f"more than {ch.rate_limit} messages per second on {ch.name}/{req.topic}",
                details={"channel": ch.name, "topic": req.topic, "limit": ch.rate_limit, "per": "second"},
            )
        if signed:
            await security.check_replay(req.message, ctx.store, ttl_s=ctx.hmac.ttl_s, max_skew_s=ctx.hmac.max_skew_s)
        return await ctx.store.deliver(prepared)

    seq = await ctx.dispatcher.submit(ch.priority, work)
    return PublishResponse(seq=seq) if seq is not None else _PUBLISHED


async def subscribe(req: SubscribeRequest, ctx: ChannelCtx) -> SubscribeResponse:
    ch = ctx.table.get(req.channel)
    ctx.store.check_deliver_to(req.deliver_to)
    cap = ctx.auth.check(ch, req.topic, "channel/subscribe", req.capability_token)
    expires = time.time() + ctx.subscribe_max_ttl_s
    if cap is not None:
        expires = min(expires, float(cap.exp))
    creator = ctx.auth.holder(cap) if cap is not None else None
    f = await ctx.store.add_forward(ch.name, req.topic, req.deliver_to, expires, creator)
    return SubscribeResponse(
        id=f.id, subject=ctx.store.subjects.channel(ch.name, req.topic), expires_at=int(expires * 1000)
    )


async def unsubscribe(req: UnsubscribeRequest, ctx: ChannelCtx) -> OkResponse:
    """Only the forwarding's creator or a holder of ``store/admin`` (Authorizer.check_unsubscribe)."""
    f = await ctx.store.get_forward(req.id)
    if f is not None:
        ctx.auth.check_unsubscribe(ctx.table.channels.get(f.channel), f.creator, req.capability_token)
    await ctx.store.remove_forward(req.id)
    return OkResponse()


async def history(req: HistoryRequest, ctx: ChannelCtx) -> HistoryResponse:
    ch = ctx.table.get(req.channel)
    if not ch.durable:
        raise InvalidRequestError(
            f"channel {ch.name!r} keeps no history (only durable channels do)",
            details={"field": "channel", "reason": "not durable"},
        )
    ctx.auth.check(ch, req.topic, "channel/subscribe", req.capability_token)
    messages, last, more = await ctx.store.history(ch.name, req.topic, req.after_seq, req.limit)
    return HistoryResponse(messages=messages, last_seq=last, more=more)


async def list_(req: ChannelsRequest, ctx: ChannelCtx) -> ChannelsResponse:
    return ChannelsResponse(channels=[c.info() for c in ctx.table.channels.values()])
