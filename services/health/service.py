"""The health service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services import SERVICES
from esdb_gater.services.health import handlers as h
from esdb_gater.services.health.store import Probes
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import health as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.memory import MemoryMonitor, monitor_from
from esdb_gater.shared.runtime.runner import Build, Resource

VERSION = "0.1.0"

OPS: list[Op[h.HealthCtx]] = [
    Op("check", h.check, m.HealthCheckRequest, m.HealthReport, "healthy | degraded | unhealthy", scope="global"),
    Op("quick", h.quick, m.QuickCheckRequest, OkResponse, "ok, or the error naming the problem"),
    Op("level", h.memory_level, m.MemoryRequest, m.MemoryLevelResponse, "memory level", token="memory"),
    Op("stats", h.memory_stats, m.MemoryRequest, m.MemoryStatsResponse, "memory used/total/level", token="memory"),
]


def spec(
    probes: Probes,
    memory: MemoryMonitor,
    expected: list[str],
    configured_stores: list[str] | None = None,
    prefix: str = "esdb",
) -> ServiceSpec[h.HealthCtx]:
    return ServiceSpec(
        name=f"{prefix}-health",
        token="health",
        version=VERSION,
        description="Health from real signals (NATS, JetStream, service pings, stores, memory) and memory pressure",
        ops=OPS,
        make_ctx=lambda store: h.HealthCtx(
            store=store,
            probes=probes,
            memory=memory,
            expected=expected,
            essential=f"{prefix}-stream",
            configured_stores=configured_stores or [],
        ),
    )


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.HealthCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    prefix = settings.service_name_prefix
    names = settings.health_services if settings.health_services is not None else list(SERVICES)
    expected = [f"{prefix}-{n}" for n in names]
    probes = Probes(nc, log, Subjects(settings.subject_prefix))
    return spec(probes, monitor_from(settings), expected, sorted(settings.stores), prefix), [log]


BUILD: Final[Build] = build
