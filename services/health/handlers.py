"""One async function per subject of the health service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass, field

from esdb_gater.services.health.store import Probes
from esdb_gater.shared.core.errors import GatewayError, UnavailableError
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.health import (
    HealthCheckRequest,
    HealthReport,
    MemoryLevelResponse,
    MemoryRequest,
    MemoryStatsResponse,
    QuickCheckRequest,
)
from esdb_gater.shared.runtime.memory import MemoryMonitor

__all__ = ["HealthCtx", "check", "memory_level", "memory_stats", "quick"]

MAX_LISTED_STORES = 100


@dataclass(frozen=True, slots=True)
class HealthCtx:
    store: str
    probes: Probes
    memory: MemoryMonitor
    expected: list[str]  # ADR-32 names of the services that must answer
    essential: str  # the service without which nothing works (the stream service)
    configured_stores: list[str] = field(default_factory=list)


async def check(req: HealthCheckRequest, ctx: HealthCtx) -> HealthReport:
    """``healthy``, ``degraded`` (something is missing but events can be read and written) or
    ``unhealthy`` (JetStream or the stream service is unavailable, or memory is critical)."""
    bad: list[str] = []  # unhealthy
    weak: list[str] = []  # degraded
    checks: dict[str, dict[str, object]] = {}

    nats: dict[str, object] = {"ok": ctx.probes.connected()}
    try:
        nats["rtt_ms"] = await ctx.probes.rtt_ms()
    except Exception as exc:
        nats.update(ok=False, error=str(exc)[:200] or type(exc).__name__)
    checks["nats"] = nats
    if not nats["ok"]:
        bad.append("NATS is not reachable")

    try:
        checks["jetstream"] = {"ok": True, **await ctx.probes.jetstream()}
    except GatewayError as exc:
        checks["jetstream"] = {"ok": False, "error": exc.message}
        bad.append(f"JetStream is not available ({exc.message})")

    instances = await ctx.probes.ping_all()
    missing = [name for name in ctx.expected if instances.get(name, 0) == 0]
    checks["services"] = {
        "ok": not missing,
        "instances": {name: instances.get(name, 0) for name in sorted(set(ctx.expected) | set(instances))},
        "missing": missing,
    }
    if ctx.essential in missing:
        bad.append(f"service {ctx.essential} is not answering")
    others = [m for m in missing if m != ctx.essential]
    if others:
        weak.append(f"service{'s' if len(others) > 1 else ''} {', '.join(others)} not answering")

    if checks["jetstream"]["ok"]:
        try:
            stores = await ctx.probes.stores()
            absent = [s for s in ctx.configured_stores if s not in stores]
            checks["stores"] = {
                "ok": not absent,
                "count": len(stores),
                "stores": stores[:MAX_LISTED_STORES],
                "missing": absent,
            }
            if absent:
                weak.append(f"configured store{'s' if len(absent) > 1 else ''} {', '.join(absent)} missing")
        except GatewayError as exc:
            checks["stores"] = {"ok": False, "error": exc.message}
            weak.append("stores could not be listed")
    else:
        checks["stores"] = {"ok": False, "error": "JetStream is not available"}

    mem = ctx.memory.stats()
    checks["memory"] = {
        "ok": mem.level == "normal",
        "level": mem.level,
        "used": mem.used,
        "total": mem.total,
        "ratio": round(mem.ratio, 4),
    }
    if mem.level == "critical":
        bad.append("memory level critical")
    elif mem.level == "elevated":
        weak.append("memory level elevated")

    if bad:
        return HealthReport(status="unhealthy", reason="; ".join(bad + weak), checks=checks)
    if weak:
        return HealthReport(status="degraded", reason="; ".join(weak), checks=checks)
    return HealthReport(status="healthy", reason=None, checks=checks)


async def quick(req: QuickCheckRequest, ctx: HealthCtx) -> OkResponse:
    """``{"ok": true}``, or the error naming the problem: ``store_not_found``, ``unavailable``
    (JetStream not answering, no leader for the store, no stream service)."""
    await ctx.probes.store(ctx.store)
    if not await ctx.probes.ping_one(ctx.essential):
        raise UnavailableError(
            f"service {ctx.essential} is not answering", details={"service": ctx.essential, "problem": "no_service"}
        )
    return OkResponse()


async def memory_level(req: MemoryRequest, ctx: HealthCtx) -> MemoryLevelResponse:
    return MemoryLevelResponse(level=ctx.memory.level())


async def memory_stats(req: MemoryRequest, ctx: HealthCtx) -> MemoryStatsResponse:
    s = ctx.memory.stats()
    return MemoryStatsResponse(
        used=s.used,
        total=s.total,
        level=s.level,
        ratio=round(s.ratio, 4),
        elevated=ctx.memory.elevated,
        critical=ctx.memory.critical,
        source=s.source,
    )
