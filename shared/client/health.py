"""The health service's ops (health and memory; docs/api/health.md) and discovery of the service
instances (the seed's ``get_workers``, over ADR-32 ``$SRV.PING``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.msg import Msg

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.core.codec import JSON
from esdb_gater.shared.core.errors import GatewayError
from esdb_gater.shared.core.telemetry import WORKER_LOOKUP, emit
from esdb_gater.shared.models.health import HealthReport, MemoryStatsResponse

__all__ = ["HealthMethods", "Worker"]


@dataclass(frozen=True)
class Worker:
    """One service instance as ``$SRV.PING`` describes it (ADR-32)."""

    name: str
    id: str
    version: str
    metadata: dict[str, str]


class HealthMethods(Transport):
    async def health(self) -> HealthReport:
        """``healthy | degraded | unhealthy`` with the reason and every check."""
        return HealthReport.model_validate(await self.request("_", "health", "check", {}))

    async def quick_health_check(self, store: str) -> bool:
        """True, or raises the error naming the problem (``StoreNotFoundError``, ``UnavailableError``)."""
        return bool((await self.request(store, "health", "quick", {}))["ok"])

    async def get_memory_level(self, store: str) -> str:
        return str((await self.request(store, "memory", "level", {}))["level"])

    async def get_memory_stats(self, store: str) -> MemoryStatsResponse:
        """``{used, total, level}`` (and ratio, thresholds, source)."""
        return MemoryStatsResponse.model_validate(await self.request(store, "memory", "stats", {}))

    async def get_workers(self, service: str | None = None, *, window_s: float = 0.3) -> list[Worker]:
        """The service instances that answer ADR-32 ``$SRV.PING`` (``service``: an ADR-32 name
        such as ``esdb-stream``; None: every service) within ``window_s`` seconds. Emits
        ``esdb_gater.worker.lookup`` (docs/telemetry.md). Requests never need this: NATS routes
        them to any instance of the queue group."""
        started = time.perf_counter_ns()
        inbox = self.nc.new_inbox()
        found: dict[str, Worker] = {}

        async def on_reply(msg: Msg) -> None:
            try:
                body = JSON.decode(msg.data)
            except GatewayError:
                return
            if isinstance(body, dict) and isinstance(body.get("name"), str) and isinstance(body.get("id"), str):
                meta = body.get("metadata")
                found[body["id"]] = Worker(
                    body["name"], body["id"], str(body.get("version", "")), dict(meta) if isinstance(meta, dict) else {}
                )

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(self.subjects.srv_ping(service), b"", reply=inbox)
            await self.nc.flush(timeout=2)
            await asyncio.sleep(window_s)
        finally:
            await sub.unsubscribe()
        workers = sorted(found.values(), key=lambda w: (w.name, w.id))
        emit(
            WORKER_LOOKUP,
            {"duration": (time.perf_counter_ns() - started) // 1000, "instance_count": len(workers)},
            {"service": service or "*"},
        )
        return workers
