"""The log port's contract suite runs every test twice: against ``FakeLog`` and against a real
nats-server (the session's, ``tests/conftest.py``), each test with its own streams.

``Backend.wait`` lets time pass: the fake's clock moves on at once, the server's takes real time
(only the duplicate-window and max-age tests wait, a few hundred milliseconds)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from esdb_gater.shared.core.connection import connect
from esdb_gater.shared.log.fake import FakeClock, FakeLog
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.log.port import LogPort

MAX_PAYLOAD = 8 * 1024 * 1024  # the harness server's max_payload (shared/tooling/natsserver.py)


@dataclass
class Backend:
    kind: str  # "fake" or "jetstream"
    log: LogPort
    prefix: str  # unique per test: stream names and subjects start with it
    clock: FakeClock | None = None
    waited: float = field(default=0.0)

    def name(self, suffix: str = "s") -> str:
        return f"{self.prefix}-{suffix}"

    def subject(self, *tokens: str) -> str:
        return ".".join((self.prefix, *tokens))

    async def add(self, suffix: str = "s", **config: Any) -> str:
        """A stream ``<prefix>-<suffix>`` on ``<prefix>.<suffix>.>``, in memory, with direct gets."""
        body: dict[str, Any] = {
            "name": self.name(suffix),
            "subjects": [self.subject(suffix, ">")],
            "storage": "memory",
            "allow_direct": True,
        }
        body.update(config)
        await self.log.add_stream(body)
        return body["name"]  # type: ignore[no-any-return]

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass (on the fake's clock, or really)."""
        self.waited += seconds
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(scope="session")
async def _jetstream_logs() -> AsyncIterator[dict[str, Log]]:
    """One ``Log`` per server URL, made on first use, closed at the end of the session."""
    logs: dict[str, Log] = {}
    yield logs
    for log in logs.values():
        await log.stop()
        await log.nc.close()


@pytest.fixture(params=["fake", "jetstream"])
async def backend(request: pytest.FixtureRequest, _jetstream_logs: dict[str, Log]) -> AsyncIterator[Backend]:
    prefix = "c" + uuid.uuid4().hex[:10]
    if request.param == "fake":
        clock = FakeClock()
        yield Backend("fake", FakeLog(clock=clock, max_payload=MAX_PAYLOAD), prefix, clock)
        return
    url: str = request.getfixturevalue("nats_url")  # the session's server, started only when needed
    log = _jetstream_logs.get(url)
    if log is None:
        log = Log(await connect(url))
        await log.start()
        _jetstream_logs[url] = log
    yield Backend("jetstream", log, prefix)
    mine: list[str] = []
    offset = 0
    while True:
        page = await log.stream_names(offset=offset)
        names = page["streams"] or []
        mine.extend(n for n in names if n.startswith(prefix))
        offset += len(names)
        if not names or offset >= page.get("total", 0):
            break
    for name in mine:
        await log.api(f"$JS.API.STREAM.DELETE.{name}")
