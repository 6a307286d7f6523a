"""Run services: connect to NATS, register each service, wait for a signal, drain.

The runner knows no service by name: it is handed ``ServiceDef``s (a name and a ``Build``, the
``build(nc, settings)`` of a service package returning its ServiceSpec and the resources to stop
on exit). The catalogue of the gateway's services, and ``start_services``/``run_services`` by
name, are in ``esdb_gater.services`` (the layer above this one).

The first connection is bounded (``connect_timeout``: ``ConnectError`` when no server answers in
time, with the last cause in one line); once connected, a lost connection is retried for ever.
Signals (``StopSignals``): the first SIGINT/SIGTERM stops taking requests and drains within
``drain_timeout``; a second one exits at once. ADR 0018.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nats.aio.client import Client

from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.core.telemetry import (
    WORKER_REGISTERED,
    WORKER_UNREGISTERED,
    attach_handlers,
    emit,
    setup_telemetry,
    shutdown_telemetry,
    system_time_ms,
    watch_connection,
)
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.runtime.endpoint import RunningService, ServiceSpec, start_service
from esdb_gater.shared.security.authz import open_authz

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_DRAIN_TIMEOUT_S",
    "EXIT_INTERRUPTED",
    "EXIT_UNREACHABLE",
    "Build",
    "ConnectError",
    "Resource",
    "ServiceDef",
    "StopSignals",
    "connect",
    "main",
    "run",
    "run_until_signal",
    "serve",
    "start",
]

log = logging.getLogger("esdb.runner")

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
EXIT_UNREACHABLE = 3  # NATS did not answer within the connect timeout
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped without draining (128 + SIGINT)


class ConnectError(Exception):
    """No NATS server of ``url`` could be reached within the connect timeout; ``str()`` is one
    line naming the URL, the timeout and the last cause."""

    def __init__(self, url: str, timeout: float, cause: BaseException | None) -> None:
        why = _one_line(cause) if cause is not None else "no answer"
        super().__init__(f"cannot reach NATS at {url} within {timeout:g} s ({why})")
        self.url = url
        self.timeout = timeout
        self.cause = cause


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Resource(Protocol):
    """Something a service's ``build`` started and the runner stops on the way out."""

    async def stop(self) -> None: ...


class Build(Protocol):
    """``services/<name>/service.py::build``: construct the service over a connection."""

    async def __call__(self, nc: Client, settings: Settings, /) -> tuple[ServiceSpec[Any], Sequence[Resource]]: ...


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """A service the runner can start: its short name (``stream``) and its ``build``."""

    name: str
    build: Build


async def connect(
    url: str,
    name: str,
    user: str | None = None,
    password: str | None = None,
    connect_timeout: float | None = None,
) -> Client:
    """``user``: connect as that NATS user, with the inbox prefix ``_INBOX.<user>`` (the secure
    accounts layout lets each service user subscribe to its own inboxes only; ADR 0014).

    ``connect_timeout``: give up on the first connection after that many seconds with ``ConnectError``
    (None: keep trying). Failed attempts are logged as one line at DEBUG before the first
    connection and at WARNING after it, never as tracebacks; reconnects stay unbounded."""
    auth: dict[str, Any] = {}
    if user:
        auth = {"user": user, "password": password or "", "inbox_prefix": f"_INBOX.{user}"}
    connected = False
    last: list[BaseException] = []
    warned: dict[str, float] = {}  # message → when it was last logged at WARNING

    async def on_error(exc: Exception) -> None:
        last[:] = [exc]
        text = _one_line(exc)
        if not connected:
            log.debug("connecting to NATS at %s: %s", url, text)
            return
        # while a server is down, nats-py retries 4 times a second: say each cause once a minute
        now = time.monotonic()
        if now - warned.get(text, -math.inf) >= 60.0:
            warned[text] = now
            log.warning("NATS connection (%s): %s; reconnecting", name, text)
        else:
            log.debug("NATS connection (%s): %s", name, text)

    async def on_reconnected() -> None:
        warned.clear()
        log.warning(
            "NATS connection (%s): reconnected to %s", name, nc.connected_url.netloc if nc.connected_url else url
        )

    options: dict[str, Any] = {"reconnect_time_wait": 0.25, "pending_size": 64 * 1024 * 1024}
    if connect_timeout is not None:
        # each attempt's own bound (TCP connect, INFO, CONNECT/PONG), within the overall one
        options["connect_timeout"] = max(0.1, min(2.0, connect_timeout))
    nc = jetstream.FastClient()
    servers = [u.strip() for u in url.split(",") if u.strip()]
    attempt = nc.connect(
        servers=servers,
        name=name,
        error_cb=on_error,
        reconnected_cb=on_reconnected,
        max_reconnect_attempts=-1,
        **options,
        **auth,
    )
    try:
        if connect_timeout is None:
            await attempt
        else:
            await asyncio.wait_for(attempt, connect_timeout)
    except TimeoutError:
        await _abandon(nc)
        raise ConnectError(url, connect_timeout or 0.0, last[0] if last else None) from None
    except BaseException:
        await _abandon(nc)
        raise
    connected = True
    return nc


async def _abandon(nc: Client) -> None:
    """Close a client whose first connection never completed (no error if it is half-open)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)


class Running:
    """Services started on one connection; ``stop()`` drains them and closes the connection."""

    def __init__(self, nc: Client, services: list[RunningService], resources: list[Any]) -> None:
        self.nc = nc
        self.services = services
        self.resources = resources

    def _stopper(self, svc: RunningService) -> Callable[[], Awaitable[None]]:
        """Stop one service, then emit ``worker.unregistered`` (docs/telemetry.md)."""

        async def stop() -> None:
            try:
                await svc.stop()
            finally:
                emit(WORKER_UNREGISTERED, {"system_time": system_time_ms()}, _worker_meta(self.nc, svc, "stopped"))

        return stop

    async def stop(self, step_timeout: float = 15.0) -> None:
        """Each step is bounded: a stuck resource (say, a JetStream call on a connection that is
        reconnecting) must not keep a process from exiting; what did not stop in time is logged
        and the connection is closed instead of drained."""
        steps: list[tuple[str, Any]] = [(f"service {s.service._name}", self._stopper(s)) for s in self.services]
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


async def start(
    services: Sequence[ServiceDef],
    settings: Settings,
    nc: Client | None = None,
    connect_timeout: float | None = None,
) -> Running:
    """Connect (unless ``nc`` is given; ``connect_timeout`` bounds the first connection, see
    ``connect``) and start ``services`` on that connection. A connection made here is closed when
    starting fails or is cancelled."""
    if nc is not None:
        return await _start_on(nc, services, settings)
    names = [s.name for s in services]
    password = settings.nats_password.get_secret_value() if settings.nats_password else None
    own = await connect(
        settings.nats_url, f"esdb-gater[{','.join(names)}]", settings.nats_user, password, connect_timeout
    )
    try:
        return await _start_on(own, services, settings)
    except BaseException:
        await _abandon(own)
        raise


def _worker_meta(nc: Client, svc: RunningService, reason: str | None = None) -> dict[str, Any]:
    info = getattr(nc, "_server_info", None) or {}
    meta: dict[str, Any] = {
        "service": svc.service._name,
        "instance_id": svc.service.id,
        "version": svc.service._version,
        "node": info.get("server_name") or "",
        "pid": os.getpid(),
    }
    if reason is not None:
        meta["reason"] = reason
    return meta


async def _start_on(nc: Client, services: Sequence[ServiceDef], settings: Settings) -> Running:
    attach_handlers(settings.telemetry_handlers)  # telemetry_handlers = ["default"]: log the catalogue
    watch_connection(nc, "services")  # cluster.node.up/down (docs/telemetry.md)
    subjects = Subjects(settings.subject_prefix)
    # before any service is built: their calls to each other carry its credential
    authz = await open_authz(nc, settings.security, subjects.security_bucket())
    running: list[RunningService] = []
    resources: list[Resource] = []
    for svc in services:
        spec, res = await svc.build(nc, settings)
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
        emit(WORKER_REGISTERED, {"system_time": system_time_ms()}, _worker_meta(nc, running[-1]))
    await nc.flush()
    return Running(nc, running, resources)


def write_ready_file(path: str | Path, running: Running | Sequence[Running]) -> None:
    """``{"pid", "services": {ADR-32 name: instance id}}``: what ``python -m esdb_gater.shared.tooling.probe
    --ready-file`` pings to tell whether *this* process answers (a container health check)."""
    every = [running] if isinstance(running, Running) else list(running)
    services = {svc.service._name: svc.service.id for r in every for svc in r.services}
    body = {"pid": os.getpid(), "services": services}
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(target)  # atomic: a probe never reads half a file


def remove_ready_file(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)


class StopSignals:
    """SIGINT and SIGTERM on the running loop: the first sets ``stop`` (drain, then exit); a
    second exits the process at once with ``EXIT_INTERRUPTED``, after ``on_force_exit`` (say,
    stopping an embedded nats-server that runs in its own session and would outlive us)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_force_exit: Callable[[], None] | None = None) -> None:
        self.stop = asyncio.Event()
        self.on_force_exit = on_force_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for sig in self.SIGNALS:
                with contextlib.suppress(Exception):
                    self._loop.remove_signal_handler(sig)
        self._loop = None

    def _on_signal(self, sig: int) -> None:
        if not self.stop.is_set():
            name = signal.Signals(sig).name
            print(f"{name}: stopping, draining in-flight requests ({name} again exits at once)", file=sys.stderr)
            self.stop.set()
            return
        force_exit(self.on_force_exit)


def force_exit(on_force_exit: Callable[[], None] | None = None) -> None:
    """Exit now, skipping every drain and ``finally`` (a second Ctrl-C)."""
    print("stopping at once (second signal); in-flight requests are dropped", file=sys.stderr, flush=True)
    if on_force_exit is not None:
        with contextlib.suppress(Exception):
            on_force_exit()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


async def run_until_signal(
    start: Callable[[], Awaitable[list[Running]]],
    on_ready: Callable[[], None] | None = None,
    ready_file: str | Path | None = None,
    on_force_exit: Callable[[], None] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
) -> None:
    """``start()`` (connect and start services), then run until SIGINT/SIGTERM; then stop taking
    requests, finish those in flight and drain, within ``drain_timeout`` (what is left then is
    closed). A signal during ``start()`` cancels it. The signal handlers are in place from the
    first line, so Ctrl-C works while connecting too; a second signal exits at once. Raises
    ``ConnectError`` when the first connection is not made in time."""
    setup_telemetry("esdb-gater")
    signals = StopSignals(on_force_exit)
    signals.install()
    running: list[Running] = []
    stopping = asyncio.ensure_future(signals.stop.wait())
    try:
        starting = asyncio.ensure_future(start())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(starting, 5.0)
            return
        running = starting.result()
        if ready_file is not None:
            write_ready_file(ready_file, running)
        if on_ready:
            on_ready()
        await signals.stop.wait()
    finally:
        stopping.cancel()
        if ready_file is not None:
            remove_ready_file(ready_file)
        if running:
            try:
                await asyncio.wait_for(_stop_all(running), drain_timeout)
            except TimeoutError:
                log.warning("draining took longer than %.0f s; closing the connections", drain_timeout)
                for r in running:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(r.nc.close(), 2.0)
        shutdown_telemetry()
        signals.remove()


async def _stop_all(running: list[Running]) -> None:
    for r in reversed(running):
        await r.stop()


async def serve(
    services: Sequence[ServiceDef],
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    ready_file: str | Path | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    on_force_exit: Callable[[], None] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
) -> None:
    """``services`` on one connection, run until SIGINT/SIGTERM (see ``run_until_signal``).
    ``ready_file``: written once every service answers (see ``write_ready_file``), removed on
    the way out."""

    async def start_all() -> list[Running]:
        return [await start(services, settings, connect_timeout=connect_timeout)]

    await run_until_signal(start_all, on_ready, ready_file, on_force_exit, drain_timeout)


def run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed: the services spend most of their time in
    the event loop (one request = several wake-ups), and uvloop makes each wake-up cheaper."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(service: ServiceDef) -> None:
    """``python -m esdb_gater.services.<name>``: run one service with settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("nats").setLevel(logging.WARNING)
    try:
        run(serve([service], Settings()))
    except ConnectError as exc:
        print(f"esdb_gater.services.{service.name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        sys.exit(0)
