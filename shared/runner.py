"""Run services: connect to NATS, register each service, wait for a signal, drain.

``run_services`` is what ``gater up`` and ``gater serve`` call. Each service package has a
``service.build(nc, settings)`` returning its ServiceSpec and the resources to stop on exit.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from shared import jetstream
from shared.authz import open_authz
from shared.endpoint import RunningService, start_service
from shared.settings import Settings
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry, shutdown_telemetry

__all__ = ["SERVICES", "connect", "main_for", "run", "run_services", "start_services"]

log = logging.getLogger("esdb.runner")


def _discover() -> dict[str, str]:
    """Every package under services/ with a ``service.py`` is a service (``build`` in it)."""
    root = Path(__file__).resolve().parent.parent / "services"
    names = sorted(p.parent.name for p in root.glob("*/service.py"))
    # the stream service first: it owns the stores the others use
    names.sort(key=lambda n: n != "stream")
    return {name: f"services.{name}.service" for name in names}


SERVICES: dict[str, str] = _discover()


async def connect(url: str, name: str, user: str | None = None, password: str | None = None) -> Client:
    """``user``: connect as that NATS user, with the inbox prefix ``_INBOX.<user>`` (the secure
    accounts layout lets each service user subscribe to its own inboxes only; ADR 0014)."""
    auth: dict[str, Any] = {}
    if user:
        auth = {"user": user, "password": password or "", "inbox_prefix": f"_INBOX.{user}"}
    return await jetstream.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        pending_size=64 * 1024 * 1024,
        **auth,
    )


class Running:
    """Services started on one connection; ``stop()`` drains them and closes the connection."""

    def __init__(self, nc: Client, services: list[RunningService], resources: list[Any]) -> None:
        self.nc = nc
        self.services = services
        self.resources = resources

    async def stop(self, step_timeout: float = 15.0) -> None:
        """Each step is bounded: a stuck resource (say, a JetStream call on a connection that is
        reconnecting) must not keep a process from exiting; what did not stop in time is logged
        and the connection is closed instead of drained."""
        steps: list[tuple[str, Any]] = [(f"service {s.service._name}", s.stop) for s in self.services]
        steps += [(type(r).__name__, r.stop) for r in self.resources]
        clean = True
        for what, stop in steps:
            try:
                await asyncio.wait_for(stop(), step_timeout)
            except TimeoutError:
                clean = False
                log.warning("stopping %s took longer than %.0f s; going on", what, step_timeout)
        if self.nc.is_closed:
            return
        try:
            if clean:
                await asyncio.wait_for(self.nc.drain(), step_timeout)
            else:
                await self.nc.close()
        except TimeoutError:
            log.warning("draining the NATS connection took longer than %.0f s; closing it", step_timeout)
            await self.nc.close()


async def start_services(names: Sequence[str], settings: Settings, nc: Client | None = None) -> Running:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    if nc is None:
        password = settings.nats_password.get_secret_value() if settings.nats_password else None
        nc = await connect(settings.nats_url, f"esdb-gater[{','.join(names)}]", settings.nats_user, password)
    subjects = Subjects(settings.subject_prefix)
    # before any service is built: their calls to each other carry its credential
    authz = await open_authz(nc, settings.security, subjects.security_bucket())
    running: list[RunningService] = []
    resources: list[Any] = []
    for name in names:
        module = importlib.import_module(SERVICES[name])
        build: Callable[[Client, Settings], Awaitable[tuple[Any, list[Any]]]] = module.build
        spec, res = await build(nc, settings)
        resources.extend(res)
        running.append(
            await start_service(
                nc,
                spec,
                subjects,
                settings.max_in_flight,
                reply_prefixes=settings.security.reply_prefixes,
                authz=authz,
            )
        )
        log.info("service %s started (%s)", spec.name, spec.version)
    await nc.flush()
    return Running(nc, running, resources)


def write_ready_file(path: str | Path, running: Running) -> None:
    """``{"pid", "services": {ADR-32 name: instance id}}``: what ``python -m shared.probe
    --ready-file`` pings to tell whether *this* process answers (a container health check)."""
    body = {"pid": os.getpid(), "services": {svc.service._name: svc.service.id for svc in running.services}}
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(target)  # atomic: a probe never reads half a file


def remove_ready_file(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)


async def run_services(
    names: Sequence[str],
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    ready_file: str | Path | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, then stop taking requests, finish those in flight, drain.
    ``ready_file``: written once every service answers (see ``write_ready_file``), removed on
    the way out."""
    setup_telemetry("esdb-gater")
    running = await start_services(names, settings)
    if ready_file is not None:
        write_ready_file(ready_file, running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_ready:
        on_ready()
    await stop.wait()
    log.info("stopping: draining in-flight requests")
    if ready_file is not None:
        remove_ready_file(ready_file)
    await running.stop()
    shutdown_telemetry()


def run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed: the services spend most of their time in
    the event loop (one request = several wake-ups), and uvloop makes each wake-up cheaper."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main_for(name: str) -> None:
    """``python -m services.<name>``: run one service with settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        run(run_services([name], Settings()))
    except KeyboardInterrupt:
        sys.exit(0)
