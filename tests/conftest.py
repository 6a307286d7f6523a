"""Test harness: a real nats-server from the pip-installed binary (port 0, temp dir) per session,
the gateway's services on it, and a client per test.

``--nats-url URL`` runs the suite against an already-running server instead (tests that need
their own server are marked ``requires_own_server`` and skip there).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from shared.client import GaterClient
from shared.natsserver import NatsServer
from shared.runner import Running, start_services
from shared.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nats-url", default=None, help="run against this NATS server instead of starting one")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_own_server: needs a server started by the harness")


@pytest.fixture(scope="session")
def nats_server(request: pytest.FixtureRequest) -> Iterator[NatsServer | str]:
    url = request.config.getoption("--nats-url")
    if url:
        yield url
        return
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer | str) -> str:
    return nats_server if isinstance(nats_server, str) else nats_server.url


@pytest.fixture(scope="session")
async def services(nats_url: str) -> AsyncIterator[Running]:
    """Every service, once per session, with stores created on first use."""
    running = await start_services(["stream"], Settings(nats_url=nats_url, auto_create_stores=True))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.drain()


@pytest.fixture
async def client(services: Running, nc: Client) -> GaterClient:
    return GaterClient(nc)


@pytest.fixture
async def msgpack_client(services: Running, nc: Client) -> GaterClient:
    return GaterClient(nc, codec="msgpack")


@pytest.fixture
def store() -> str:
    """A fresh store per test, so tests never see each other's streams."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def stream_id() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.get_event_loop().run_until_complete(coro)
