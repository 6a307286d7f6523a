"""Memory levels change behaviour where it matters (SPEC.md §10): under pressure the stream
service reads in smaller pages, and the read still returns every event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from esdb_gater.services.stream.store import READ_PAGES, EventStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models.stream import EventIn
from esdb_gater.shared.runtime.memory import MemoryMonitor


@pytest.mark.parametrize(("limit_bytes", "level"), [(1 << 50, "normal"), (1, "critical")])
async def test_pages_shrink_with_the_memory_level(
    nats_url: str, store: str, limit_bytes: int, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await jetstream.connect(nats_url)
    log = Log(nc)
    await log.start()
    try:
        memory = MemoryMonitor(limit_bytes=limit_bytes)  # a tiny limit makes any process "critical"
        assert memory.level() == level
        events = EventStore(log, Subjects(), Settings(auto_create_stores=True), memory=memory)
        for i in range(300):
            await events.append(store, "paged", -2, [EventIn(event_type="E", data={"i": i})])
        asked: list[int] = []
        original = log.direct_batch

        async def spy(stream: str, req: Mapping[str, Any]) -> Any:
            asked.append(int(req["batch"]))
            return await original(stream, req)

        monkeypatch.setattr(log, "direct_batch", spy)
        got = await events.read(store, "paged", 0, 300, "forward")
        assert [e["data"]["i"] for e in got] == list(range(300))
        assert max(asked) <= READ_PAGES[level][0]
        assert len(asked) >= 300 // READ_PAGES[level][0]
    finally:
        await log.stop()
        await nc.drain()
