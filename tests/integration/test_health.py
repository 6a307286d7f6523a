"""Health and memory pressure over the wire (SPEC.md §10, issue 7).

The session's services give the healthy case. The other cases run one more health instance on
the same server under its own subject prefix (a universe of its own, where only what the test
starts answers), with its expectations and memory thresholds set by configuration: nothing is
broken or filled for real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.services import SERVICES, start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import InvalidRequestError, StoreNotFoundError, UnavailableError
from esdb_gater.shared.core.settings import MemorySettings, Settings, StoreConfig
from esdb_gater.shared.runtime.runner import Running
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)


async def test_everything_running_is_healthy(client: GaterClient, wire: Wire, store: str) -> None:
    await client.append_events(store, "s", [{"event_type": "E", "data": {}}])
    report = await client.health()
    checks = report.checks
    assert checks["nats"]["ok"] and checks["nats"]["rtt_ms"] >= 0
    assert checks["jetstream"]["ok"] and checks["jetstream"]["streams"] >= 2
    assert checks["services"]["ok"] and checks["services"]["missing"] == []
    for name in SERVICES:
        assert checks["services"]["instances"][f"esdb-{name}"] >= 1
    assert checks["stores"]["ok"] and checks["stores"]["count"] >= 1
    level = checks["memory"]["level"]
    expected = {"normal": "healthy", "elevated": "degraded", "critical": "unhealthy"}[level]
    assert report.status == expected
    assert (report.reason is None) == (expected == "healthy")
    raw = (await wire.raw("esdb.api._.health.check", b"{}")).ok()
    assert set(raw) == {"status", "reason", "checks"}


async def test_quick_check_and_memory(client: GaterClient, wire: Wire, store: str) -> None:
    await client.append_events(store, "s", [{"event_type": "E", "data": {}}])
    assert await client.quick_health_check(store) is True
    with pytest.raises(StoreNotFoundError):
        await client.quick_health_check("missing" + store)
    with pytest.raises(InvalidRequestError):
        await client.quick_health_check("_")
    level = await client.get_memory_level(store)
    stats = await client.get_memory_stats(store)
    assert level in ("normal", "elevated", "critical")
    assert stats.total > 0 and stats.used > 0 and stats.level in ("normal", "elevated", "critical")
    assert (stats.elevated, stats.critical) == (0.70, 0.85)
    (await wire.raw("esdb.api._.memory.level", b"{}")).error("invalid_request")  # store-scoped
    (await wire.call(store, "quick", {"extra": 1}, service="health")).error("invalid_request")


@asynccontextmanager
async def universe(nats_url: str, nc: Client, **settings: Any) -> AsyncIterator[GaterClient]:
    """One health instance under the prefix ``hx`` with these settings; a client for it."""
    running: Running = await start_services(
        ["health"], Settings(nats_url=nats_url, subject_prefix="hx", service_name_prefix="hx", **settings)
    )
    try:
        yield GaterClient(nc, prefix="hx", retry=None)
    finally:
        await running.stop()


HUGE = 1 << 50  # a forced total so large that the ratio is ~0: normal


@pytest.mark.parametrize(
    ("settings", "status", "reason"),
    [
        ({"health_services": ["health"], "memory": MemorySettings(limit_bytes=HUGE)}, "healthy", None),
        (
            {"health_services": ["health", "link"], "memory": MemorySettings(limit_bytes=HUGE)},
            "degraded",
            "service hx-link not answering",
        ),
        (
            {"health_services": ["health", "stream", "link"], "memory": MemorySettings(limit_bytes=HUGE)},
            "unhealthy",
            "service hx-stream is not answering; service hx-link not answering",
        ),
        (
            {"health_services": ["health"], "memory": MemorySettings(limit_bytes=HUGE, elevated=1e-12, critical=1)},
            "degraded",
            "memory level elevated",
        ),
        (
            {"health_services": ["health"], "memory": MemorySettings(limit_bytes=1)},
            "unhealthy",
            "memory level critical",
        ),
        (
            {
                "health_services": ["health"],
                "memory": MemorySettings(limit_bytes=HUGE),
                "stores": {"configured1": StoreConfig()},
            },
            "degraded",
            "configured store configured1 missing",
        ),
    ],
    ids=["healthy", "service-missing", "stream-missing", "memory-elevated", "memory-critical", "store-missing"],
)
async def test_status_follows_the_signals(
    services: Running, nats_url: str, nc: Client, settings: dict[str, Any], status: str, reason: str | None
) -> None:
    async with universe(nats_url, nc, **settings) as hx:
        report = await hx.health()
        assert (report.status, report.reason) == (status, reason), report.checks
        if "memory" in (reason or ""):
            level = report.checks["memory"]["level"]
            assert await hx.get_memory_level("any") == level
            stats = await hx.get_memory_stats("any")
            assert (stats.level, stats.source) == (level, "config")


async def test_quick_check_names_the_problem(services: Running, nats_url: str, nc: Client, store: str) -> None:
    async with universe(nats_url, nc, health_services=["health"]) as hx:
        with pytest.raises(StoreNotFoundError) as exc:
            await hx.quick_health_check(store)
        assert exc.value.details == {"store": store}
        # the store's log exists, but no stream service serves this prefix
        cfg = {"name": f"hx-log-{store}", "subjects": [f"hx.log.{store}.>"], "storage": "memory"}
        msg = await nc.request(f"$JS.API.STREAM.CREATE.hx-log-{store}", json.dumps(cfg).encode(), timeout=5)
        assert "error" not in json.loads(msg.data)
        try:
            with pytest.raises(UnavailableError) as exc2:
                await hx.quick_health_check(store)
            assert exc2.value.details["problem"] == "no_service"
        finally:
            await nc.request(f"$JS.API.STREAM.DELETE.hx-log-{store}", b"", timeout=5)
