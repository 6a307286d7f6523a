"""A gateway for the eventsourcing tests: the stream service as its own process (as ``gater
serve stream``), stores made on first use, on a nats-server of its own.

The library's recorders are synchronous, and the session's in-process services (tests/conftest.py)
only answer while an async test runs their loop; so these tests get a service process of their
own, under its own subject prefix, so that no request reaches the in-process instances even when
they share a server (``--nats-url``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from esdb_gater.shared.tooling.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "esdbes"  # the subject prefix of this gateway (the in-process services use "esdb")


@dataclass(frozen=True)
class Gateway:
    url: str
    prefix: str

    def env(self, store: str | None = None, **extra: str) -> dict[str, str]:
        """Environment of an application (or factory) on a fresh store (or ``store``)."""
        return {
            "ESDB_GATER_NATS_URL": self.url,
            "ESDB_GATER_SUBJECT_PREFIX": self.prefix,
            "ESDB_GATER_STORE": store or fresh_store(),
            **extra,
        }


def fresh_store() -> str:
    return "es" + uuid.uuid4().hex[:14]


def start_stream_service(nats_url: str, prefix: str, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m esdb_gater.cli serve stream`` with auto-created stores (no quota); returns once
    it wrote its ready file."""
    ready, log = folder / "ready.json", folder / "stream.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EXPORTER_OTLP", "ESDB_GATER_"))}
    env.update(
        ESDB_GATER_AUTO_CREATE_STORES="true",
        ESDB_GATER_QUOTAS__AUTO_CREATED_STORES="0",
        ESDB_GATER_SUBJECT_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    argv = [sys.executable, "-m", "esdb_gater.cli", "serve", "stream", "--nats", nats_url, "--ready-file", str(ready)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"the stream service did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")  # stopped once the package's tests are done
def es_gateway(nats_server: NatsServer | str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A nats-server of its own when the harness starts servers (so this service process is seen
    by no other test, e.g. in ``$SRV.PING`` counts); the given one under ``--nats-url`` and
    ``--nats-container``."""
    own = NatsServer().start() if isinstance(nats_server, NatsServer) else None
    url = own.url if own is not None else str(nats_server)
    try:
        proc, _ = start_stream_service(url, PREFIX, tmp_path_factory.mktemp("es-gateway"))
        try:
            yield Gateway(url, PREFIX)
        finally:
            stop(proc)
    finally:
        if own is not None:
            own.cleanup()


@pytest.fixture(autouse=True)
def _gateway_on_test_class(request: pytest.FixtureRequest, es_gateway: Gateway) -> None:
    """unittest cases (the library's) read the gateway from their class."""
    if request.cls is not None:
        request.cls.gateway = es_gateway
