"""The causation service's op table: one line per subject."""

from __future__ import annotations

from services.causation import handlers as h
from services.causation.indexer import IndexerPool
from services.causation.store import CausationStore
from shared.endpoint import Op, ServiceSpec
from shared.models import causation as m
from shared.models.stream import EventsResponse

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


async def build(nc: object, settings: object) -> tuple[ServiceSpec[h.CausationCtx], list[object]]:
    from nats.aio.client import Client

    from shared.jetstream import Log
    from shared.settings import Settings
    from shared.subjects import Subjects
    from shared.upcasting import SchemaRegistry

    assert isinstance(nc, Client) and isinstance(settings, Settings)
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    db = CausationStore(nc, log, subjects, settings)
    pool = IndexerPool(nc, db, subjects)
    await pool.start()
    registry = SchemaRegistry(log, subjects, idle_evict_s=settings.quotas.idle_evict_s)
    return spec(db, pool, registry.upcast, settings.service_name_prefix), [pool, registry, log]
