"""The scavenger service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.scavenger import handlers as h
from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.services.scavenger.scheduler import Scheduler
from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import scavenger as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.runner import Build, Resource

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


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.ScavengerCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    db = ScavengeStore(nc, log, subjects, settings)
    await db.open()
    engine = Scavenger(db)
    scheduler = Scheduler(db, engine, owner=nc._nuid.next().decode(), lease_ttl_s=settings.lease_ttl_s)
    await scheduler.start()
    return spec(db, engine, settings.service_name_prefix), [scheduler, log]


BUILD: Final[Build] = build
