"""Wire models of the health service: ``<prefix>.api._.health.check``,
``<prefix>.api.<store>.health.quick`` and ``<prefix>.api.<store>.memory.{level,stats}`` (SPEC.md §10,
docs/api/health.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from esdb_gater.shared.models.common import Request, Response

__all__ = [
    "HealthCheckRequest",
    "HealthReport",
    "MemoryLevelResponse",
    "MemoryRequest",
    "MemoryStatsResponse",
    "QuickCheckRequest",
]


class HealthCheckRequest(Request):
    pass


class HealthReport(Response):
    status: Literal["healthy", "degraded", "unhealthy"]
    reason: str | None = Field(description="what is wrong (null when healthy)")
    checks: dict[str, Any] = Field(description="nats, jetstream, services, stores, memory: each with ok and facts")


class QuickCheckRequest(Request):
    pass


class MemoryRequest(Request):
    pass


class MemoryLevelResponse(Response):
    level: Literal["normal", "elevated", "critical"]


class MemoryStatsResponse(Response):
    used: int = Field(description="bytes in use")
    total: int = Field(description="bytes available to the process (cgroup limit, else the machine's)")
    level: Literal["normal", "elevated", "critical"]
    ratio: float = Field(description="used / total")
    elevated: float = Field(description="the ratio at which the level is elevated")
    critical: float = Field(description="the ratio at which the level is critical")
    source: str = Field(description="where total comes from: config, cgroup2, cgroup1 or host")
