"""Helpers of the security suite: most attacks need services with non-default settings (a
capability mode, small quotas, an accounts layout), which must not join the queue groups of the
session's services, so each module starts a nats-server of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
from nats.aio.client import Client

from esdb_gater.services import SERVICES, start_services
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import NatsServer


@contextlib.contextmanager
def own_server(name: str, **options: Any) -> Iterator[NatsServer]:
    """A nats-server of this module's own (loopback, port 0, JetStream in a temporary folder)."""
    srv = NatsServer(name=name, **options)
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()


@contextlib.asynccontextmanager
async def own_services(settings: Settings, names: list[str] | None = None) -> AsyncIterator[Running]:
    """Every service (or ``names``) with ``settings``, stopped on exit."""
    running = await start_services(names or list(SERVICES), settings)
    try:
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def connection(url: str, **options: Any) -> AsyncIterator[Client]:
    """A plain client connection, drained on exit."""
    nc = await nats.connect(url, **options)
    try:
        yield nc
    finally:
        await nc.drain()
