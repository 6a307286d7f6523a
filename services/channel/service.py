"""The channel service's op table: one line per subject (all store-less, on the token ``_``)."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.channel import handlers as h
from esdb_gater.services.channel.dispatch import Dispatcher
from esdb_gater.services.channel.policy import Authorizer, ChannelTable, HmacPolicy
from esdb_gater.services.channel.store import ChannelStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import channel as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.memory import MemoryMonitor
from esdb_gater.shared.runtime.runner import Build, Resource
from esdb_gater.shared.security import authz
from esdb_gater.shared.security.signing import resolve_secret

VERSION = "0.1.0"

OPS: list[Op[h.ChannelCtx]] = [
    Op("publish", h.publish, m.PublishRequest, m.PublishResponse, "publish a message on a channel topic", "global"),
    Op(
        "subscribe",
        h.subscribe,
        m.SubscribeRequest,
        m.SubscribeResponse,
        "forward a channel topic to your inbox (capability token holders)",
        "global",
    ),
    Op("unsubscribe", h.unsubscribe, m.UnsubscribeRequest, OkResponse, "stop a forwarding (ok when gone)", "global"),
    Op("history", h.history, m.HistoryRequest, m.HistoryResponse, "messages a durable channel kept", "global"),
    Op("list", h.list_, m.ChannelsRequest, m.ChannelsResponse, "the channel table in effect", "global"),
]


def _authorizer(nc: Client, settings: Settings) -> Authorizer:
    """The channel policy's trust settings: ``channels.*`` where set, else ``security.*``;
    trusted issuers are both lists plus the services' own DID (docs/security.md)."""
    cfg, sec = settings.channels, settings.security
    realm = cfg.realm if "realm" in cfg.model_fields_set else sec.realm
    audience = cfg.audience or sec.audience
    trusted = [*cfg.trusted_issuers, *sec.trusted_issuers]
    policy = authz.for_connection(nc)
    if policy is not None and policy.credential is not None:
        trusted.append(policy.credential.did)
    verifier = authz.Verifier(trusted, audience, cfg.capability_leeway_s)
    return Authorizer(realm, verifier.trusted_issuers, audience, cfg.capability_leeway_s, verifier)


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.ChannelCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    cfg = settings.channels
    subjects = Subjects(settings.subject_prefix)
    table = ChannelTable(cfg, floor=settings.security.capability_mode)
    secret, _source = resolve_secret(
        cfg.hmac_secret.get_secret_value() if cfg.hmac_secret is not None else None, cfg.hmac_secret_file
    )
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    store = ChannelStore(nc, log, subjects, cfg)
    store.target_allow = settings.security.target_allow.get("_")  # deliver_to allow-list (ADR 0013)
    store.forwardings_limit = settings.quotas.forwardings_per_store  # per channel (ADR 0016)
    await store.open(durable=table.any_durable, rate_limited=table.any_rate_limited)
    mem = settings.memory
    dispatcher = Dispatcher(
        workers=cfg.workers,
        max_queue=cfg.max_queue,
        shed_at=cfg.shed_at,
        weights=cfg.weights,
        max_wait_s=cfg.max_queue_wait_s,
        memory=MemoryMonitor(
            elevated=mem.elevated,
            critical=mem.critical,
            limit_bytes=mem.limit_bytes,
            sample_interval_s=mem.sample_interval_s,
        ),
    )
    await dispatcher.start()
    ctx = h.ChannelCtx(
        table=table,
        store=store,
        dispatcher=dispatcher,
        auth=_authorizer(nc, settings),
        hmac=HmacPolicy(secret, cfg.message_ttl_s, cfg.max_clock_skew_s),
        subscribe_max_ttl_s=cfg.subscribe_max_ttl_s,
    )
    spec = ServiceSpec(
        name=f"{settings.service_name_prefix}-channel",
        token="channel",
        version=VERSION,
        description="Pub/sub channels: priorities, per-topic rate limits, HMAC signing, capability tokens",
        ops=OPS,
        make_ctx=lambda store_: ctx,
    )
    # stopped in this order after the endpoints drain: queued jobs, the forwarding watch, the inbox
    return spec, [dispatcher, store, log]


BUILD: Final[Build] = build
