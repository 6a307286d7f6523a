"""The gateway's services, and the catalogue the command line and the tests start them from.

Each package: ``service.py`` (the op table, ``build`` and ``BUILD``, the same function typed as
the runner's ``Build`` so mypy checks it conforms), ``handlers.py``, ``store.py`` (its JetStream
code). No service imports another; this module imports a service only when it is started
(``definition``), so ``SERVICES`` costs nothing to read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from nats.aio.client import Client

from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.runtime import runner
from esdb_gater.shared.runtime.runner import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DRAIN_TIMEOUT_S,
    Build,
    Running,
    ServiceDef,
)

__all__ = ["SERVICES", "definition", "main_for", "run_services", "start_services"]

# short name -> module with ``BUILD``; the stream service first: it owns the stores the others use
SERVICES: Final[dict[str, str]] = {
    name: f"{__name__}.{name}.service"
    for name in (
        "stream",
        "causation",
        "channel",
        "health",
        "link",
        "scavenger",
        "schema",
        "snapshot",
        "subscription",
    )
}


def definition(name: str) -> ServiceDef:
    """The runner's view of service ``name`` (imports its package)."""
    if name not in SERVICES:
        raise SystemExit(f"unknown service(s): {name}; choose from {', '.join(SERVICES)}")
    build: Build = importlib.import_module(SERVICES[name]).BUILD
    return ServiceDef(name, build)


def _definitions(names: Sequence[str]) -> list[ServiceDef]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    return [definition(n) for n in names]


async def start_services(
    names: Sequence[str],
    settings: Settings,
    nc: Client | None = None,
    connect_timeout: float | None = None,
) -> Running:
    """Start the services ``names`` on one connection (``runner.start``)."""
    return await runner.start(_definitions(names), settings, nc=nc, connect_timeout=connect_timeout)


async def run_services(
    names: Sequence[str],
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    ready_file: str | Path | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    on_force_exit: Callable[[], None] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
) -> None:
    """``names`` on one connection until SIGINT/SIGTERM (``runner.serve``)."""
    await runner.serve(
        _definitions(names), settings, on_ready, ready_file, connect_timeout, on_force_exit, drain_timeout
    )


def main_for(name: str) -> None:
    """``python -m esdb_gater.services.<name>``: one service, settings from the environment."""
    runner.main(definition(name))
