"""The scavenger service's op table: one line per subject."""

from __future__ import annotations

from services.scavenger import handlers as h
from services.scavenger.engine import Scavenger
from services.scavenger.scheduler import Scheduler
from services.scavenger.store import ScavengeStore
from shared.endpoint import Op, ServiceSpec
from shared.models import scavenger as m
from shared.models.common import OkResponse

VERSION = "0.1.0"

OPS: list[Op[h.ScavengerCtx]] = [
    Op("scavenge", h.scavenge, m.ScavengeRequest, m.ScavengeResult, "remove a stream's old events (per append)"),
    Op(
        "scavenge_matching",
        h.scavenge_matching,
        m.ScavengeMatchingRequest,
        m.ScavengeResults,
        "scavenge every stream matching a pattern",
    ),
    Op("dry_run", h.dry_run, m.DryRunRequest, m.ScavengeResult, "what scavenge would remove; removes nothing"),
    Op("archive_read", h.archive_read, m.ArchiveReadRequest, m.ArchiveReadResponse, "the events of an archive"),
    Op("policy_set", h.policy_set, m.PolicySetRequest, m.Policy, "create or replace a retention policy"),
    Op("policy_get", h.policy_get, m.PolicyNameRequest, m.Policy, "a retention policy and its last run"),
    Op("policy_list", h.policy_list, m.PolicyListRequest, m.PoliciesResponse, "the store's retention policies"),
    Op("policy_delete", h.policy_delete, m.PolicyNameRequest, OkResponse, "remove a retention policy"),
]


def spec(db: ScavengeStore, engine: Scavenger, prefix: str = "esdb") -> ServiceSpec[h.ScavengerCtx]:
    return ServiceSpec(
        name=f"{prefix}-scavenger",
        token="scavenger",
        version=VERSION,
        description="Scavenging: remove old events per append, archive them, retention policies on a schedule",
        ops=OPS,
        make_ctx=lambda store: h.ScavengerCtx(store=store, db=db, engine=engine),
    )


async def build(nc: object, settings: object) -> tuple[ServiceSpec[h.ScavengerCtx], list[object]]:
    from nats.aio.client import Client

    from shared.jetstream import Log
    from shared.settings import Settings
    from shared.subjects import Subjects

    assert isinstance(nc, Client) and isinstance(settings, Settings)
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    db = ScavengeStore(nc, log, subjects, settings)
    await db.open()
    engine = Scavenger(db)
    scheduler = Scheduler(db, engine, owner=nc._nuid.next().decode(), lease_ttl_s=settings.lease_ttl_s)
    await scheduler.start()
    return spec(db, engine, settings.service_name_prefix), [scheduler, log]
