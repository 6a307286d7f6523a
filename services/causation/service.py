"""The causation service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.causation import handlers as h
from esdb_gater.services.causation.indexer import IndexerPool
from esdb_gater.services.causation.store import CausationStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import causation as m
from esdb_gater.shared.models.stream import EventsResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.runner import Build, Resource
from esdb_gater.shared.upcasting.registry import SchemaRegistry

VERSION = "0.1.0"

OPS: list[Op[h.CausationCtx]] = [
    Op("effects", h.effects, m.EventIdRequest, EventsResponse, "events caused by an event (get_effects)"),
    Op("cause", h.cause, m.EventIdRequest, m.CauseResponse, "the event that caused an event (get_cause)"),
    Op("chain", h.chain, m.ChainRequest, EventsResponse, "root first, up to the event (get_causation_chain)"),
    Op("correlated", h.correlated, m.CorrelatedRequest, EventsResponse, "events of a correlation id, by time"),
    Op("graph", h.graph, m.GraphRequest, m.GraphResponse, "nodes, edges, roots, leaves (and DOT text)"),
]


def spec(
    db: CausationStore, pool: IndexerPool, upcast: h.Upcaster | None = None, prefix: str = "esdb"
) -> ServiceSpec[h.CausationCtx]:
    return ServiceSpec(
        name=f"{prefix}-causation",
        token="causation",
        version=VERSION,
        description="Causation queries answered from indexes kept as events are written",
        ops=OPS,
        make_ctx=lambda store: h.CausationCtx(store=store, db=db, pool=pool, upcast=upcast),
    )


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.CausationCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    db = CausationStore(nc, log, subjects, settings)
    pool = IndexerPool(nc, db, subjects)
    await pool.start()
    registry = SchemaRegistry(log, subjects, idle_evict_s=settings.quotas.idle_evict_s)
    return spec(db, pool, registry.upcast, settings.service_name_prefix), [pool, registry, log]


BUILD: Final[Build] = build
