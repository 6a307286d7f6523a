"""The subscription service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.subscription import handlers as h
from esdb_gater.services.subscription.driver import Supervisor
from esdb_gater.services.subscription.store import SubscriptionStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import subscription as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.runner import Build, Resource
from esdb_gater.shared.upcasting.registry import SchemaRegistry

VERSION = "0.1.0"

OPS: list[Op[h.SubCtx]] = [
    Op("save", h.save, m.SaveRequest, m.SubscriptionInfo, "create a persistent subscription"),
    Op("remove", h.remove, m.SubscriptionKeyRequest, OkResponse, "remove a subscription (ok when missing)"),
    Op("ack", h.ack, m.AckRequest, OkResponse, "acknowledge an event delivered to a subscription"),
    Op("list", h.list_, m.ListRequest, m.SubscriptionsResponse, "the store's subscriptions with checkpoint and lag"),
    Op("get", h.get, m.GetRequest, m.SubscriptionInfo, "one subscription by name"),
    Op("replay_parked", h.replay_parked, m.ReplayParkedRequest, m.ReplayParkedResponse, "deliver parked events again"),
]


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.SubCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    subs = SubscriptionStore(nc, log, subjects, settings)
    await subs.open()
    # deliveries pass through the same upcasting as stream reads (SPEC.md §6)
    schemas = SchemaRegistry(log, subjects, idle_evict_s=settings.quotas.idle_evict_s)
    supervisor = Supervisor(
        nc, subs, subjects, owner=nc._nuid.next().decode(), lease_ttl_s=settings.lease_ttl_s, upcast=schemas.upcast
    )
    await supervisor.start()
    spec = ServiceSpec(
        name=f"{settings.service_name_prefix}-subscription",
        token="subscription",
        version=VERSION,
        description="Persistent subscriptions: catch-up then live, acks, redelivery, parking",
        ops=OPS,
        make_ctx=lambda store: h.SubCtx(store=store, subs=subs, supervisor=supervisor),
    )
    return spec, [supervisor, schemas, log]


BUILD: Final[Build] = build
