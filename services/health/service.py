"""The health service's op table: one line per subject."""

from __future__ import annotations

from services.health import handlers as h
from services.health.store import Probes
from shared.endpoint import Op, ServiceSpec
from shared.memory import MemoryMonitor, monitor_from
from shared.models import health as m
from shared.models.common import OkResponse

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


async def build(nc: object, settings: object) -> tuple[ServiceSpec[h.HealthCtx], list[object]]:
    from nats.aio.client import Client

    from shared.jetstream import Log
    from shared.runner import SERVICES
    from shared.settings import Settings
    from shared.subjects import Subjects

    assert isinstance(nc, Client) and isinstance(settings, Settings)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    prefix = settings.service_name_prefix
    names = settings.health_services if settings.health_services is not None else list(SERVICES)
    expected = [f"{prefix}-{n}" for n in names]
    probes = Probes(nc, log, Subjects(settings.subject_prefix))
    return spec(probes, monitor_from(settings), expected, sorted(settings.stores), prefix), [log]
