"""The subscription service's op table: one line per subject."""

from __future__ import annotations

from services.subscription import handlers as h
from services.subscription.driver import Supervisor
from services.subscription.store import SubscriptionStore
from shared.endpoint import Op, ServiceSpec
from shared.models import subscription as m
from shared.models.common import OkResponse

VERSION = "0.1.0"

OPS: list[Op[h.SubCtx]] = [
    Op("save", h.save, m.SaveRequest, m.SubscriptionInfo, "create a persistent subscription"),
    Op("remove", h.remove, m.SubscriptionKeyRequest, OkResponse, "remove a subscription (ok when missing)"),
    Op("ack", h.ack, m.AckRequest, OkResponse, "acknowledge an event delivered to a subscription"),
    Op("list", h.list_, m.ListRequest, m.SubscriptionsResponse, "the store's subscriptions with checkpoint and lag"),
    Op("get", h.get, m.GetRequest, m.SubscriptionInfo, "one subscription by name"),
    Op("replay_parked", h.replay_parked, m.ReplayParkedRequest, m.ReplayParkedResponse, "deliver parked events again"),
]


async def build(nc: object, settings: object) -> tuple[ServiceSpec[h.SubCtx], list[object]]:
    from nats.aio.client import Client

    from shared.jetstream import Log
    from shared.settings import Settings
    from shared.subjects import Subjects
    from shared.upcasting import SchemaRegistry

    assert isinstance(nc, Client) and isinstance(settings, Settings)
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
