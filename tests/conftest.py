"""Test harness: a real nats-server from the pip-installed binary (port 0, temp dir) per session,
the gateway's services on it, and a client per test.

``--nats-url URL`` runs the suite against an already-running server instead (tests that need
their own server are marked ``requires_own_server`` and skip there).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client

from esdb_gater.services import SERVICES, start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nats-url", default=None, help="run against this NATS server instead of starting one")
    parser.addoption(
        "--nats-container",
        default=None,
        metavar="IMAGE",
        help="run the suite against a NATS container (testcontainers), e.g. nats:2.12; "
        "every test skips with the reason when no Docker engine answers",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--nats-container`` without a Docker engine: every test is marked skipped, with the
    reason, instead of failing on a server that cannot start."""
    image = config.getoption("--nats-container")
    if not image:
        return
    from tests.integration.test_docker import DOCKER_AVAILABLE

    if not DOCKER_AVAILABLE:
        marker = pytest.mark.skip(reason=f"--nats-container {image}: no Docker engine reachable")
        for item in items:
            item.add_marker(marker)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_own_server: needs a server started by the harness")


@pytest.fixture(scope="session")
def nats_server(request: pytest.FixtureRequest) -> Iterator[NatsServer | str]:
    url = request.config.getoption("--nats-url")
    if url:
        yield url
        return
    image = request.config.getoption("--nats-container")
    if image:
        yield from _container(image)
        return
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def _container(image: str) -> Iterator[str]:
    """The same suite against a stock NATS image, when a Docker engine answers."""
    from tests.integration.test_docker import DOCKER_AVAILABLE

    assert DOCKER_AVAILABLE, "pytest_collection_modifyitems skips every test in this case"
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    with tempfile.TemporaryDirectory(prefix="esdb-container-") as tmp:
        conf = Path(tmp) / "nats.conf"
        # like the harness's server: JetStream and an 8 MB max_payload (the CLI has no flag for it)
        conf.write_text("port: 4222\nmax_payload: 8MB\njetstream { store_dir: /data }\n")
        container = (
            DockerContainer(image)
            .with_volume_mapping(str(conf), "/etc/esdb/nats.conf", "ro")
            .with_command("-c /etc/esdb/nats.conf")
            .with_exposed_ports(4222)
            .waiting_for(LogMessageWaitStrategy("Server is ready"))
        )
        with container:
            yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer | str) -> str:
    return nats_server if isinstance(nats_server, str) else nats_server.url


@pytest.fixture(scope="session")
async def services(nats_url: str) -> AsyncIterator[Running]:
    """Every service, once per session, with stores created on first use."""
    # every test makes fresh stores: no cap on how many auto-create makes (the quota has its own
    # tests, tests/security/test_reserved_and_quotas.py)
    settings = Settings(nats_url=nats_url, auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0))
    running = await start_services(list(SERVICES), settings)
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


# --- raw wire access (what a non-Python client sees) -------------------------------------------

ERROR_STATUS = {
    "invalid_request": 400,
    "payload_too_large": 413,
    "wrong_expected_version": 409,
    "already_exists": 409,
    "stream_not_found": 404,
    "store_not_found": 404,
    "not_found": 404,
    "internal": 500,
    "unavailable": 503,
    "timeout": 504,
}


@dataclass
class Reply:
    """One raw reply: headers, the raw body and the body decoded by its Content-Type."""

    headers: dict[str, str]
    data: bytes
    body: Any

    @property
    def is_error(self) -> bool:
        return "Nats-Service-Error-Code" in self.headers

    def ok(self) -> Any:
        """The body of a success reply (fails the test on an error reply)."""
        assert not self.is_error, f"unexpected error reply {self.headers} {self.body!r}"
        return self.body

    def error(self, code: str) -> dict[str, Any]:
        """Check the ADR-32 headers and the envelope of an error reply; return its details."""
        assert self.is_error, f"expected {code}, got a success reply {self.body!r}"
        assert self.headers.get("Nats-Service-Error"), self.headers
        status = self.headers["Nats-Service-Error-Code"]
        assert status.isdigit(), status
        assert isinstance(self.body, dict) and set(self.body) == {"error"}, self.body
        err = self.body["error"]
        assert set(err) == {"code", "message", "retryable", "details"}, err
        assert err["code"] == code, err
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["retryable"], bool)
        assert isinstance(err["details"], dict)
        if code in ERROR_STATUS:
            assert int(status) == ERROR_STATUS[code], (status, err)
        assert "Traceback" not in err["message"] and "Traceback" not in json.dumps(err["details"], default=str)
        return err["details"]


class Wire:
    """Requests as bytes on subjects, JSON or msgpack, without GaterClient in between."""

    def __init__(self, nc: Client, prefix: str = "esdb") -> None:
        self.nc = nc
        self.prefix = prefix

    async def raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None, wait: float = 5.0) -> Reply:
        msg = await self.nc.request(subject, data, timeout=wait, headers=headers)
        hdrs = dict(msg.headers or {})
        if hdrs.get("Content-Type") == "application/msgpack":
            body = msgpack.unpackb(msg.data, raw=False)
        else:
            body = json.loads(msg.data) if msg.data else None
        return Reply(hdrs, msg.data, body)

    async def call(
        self, store: str, op: str, body: Any, *, service: str = "stream", codec: str = "json", wait: float = 5.0
    ) -> Reply:
        subject = f"{self.prefix}.api.{store}.{service}.{op}"
        if codec == "msgpack":
            return await self.raw(
                subject, msgpack.packb(body, use_bin_type=True), {"Content-Type": "application/msgpack"}, wait
            )
        return await self.raw(subject, json.dumps(body).encode(), None, wait)


@pytest.fixture
async def wire(services: Running, nc: Client) -> Wire:
    """Raw requests to the session's services."""
    return Wire(nc)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.get_event_loop().run_until_complete(coro)
