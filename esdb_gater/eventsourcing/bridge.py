"""The synchronous bridge: one asyncio loop and one NATS connection on a private daemon thread.

The library's recorders are synchronous and are called from many threads at once (the
application's callers, a subscription's pull thread, a runner's workers). Each factory owns one
``Bridge``: its thread runs the loop, and ``call`` hands a coroutine to it with
``run_coroutine_threadsafe`` and blocks until the result is there. So every recorder of a
factory shares one connection and is safe to call from any thread, except from the loop's own
thread (that would wait for itself; ``call`` refuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client

from esdb_gater.eventsourcing.config import GaterConfig
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core import connection

__all__ = ["Bridge", "BridgeClosedError"]

T = TypeVar("T")
log = logging.getLogger(__name__)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (as for the services), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover  (Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BridgeClosedError(RuntimeError):
    """A recorder was used after its factory was closed."""


class Bridge:
    """A loop thread and, made on first use, the connection and its ``GaterClient``."""

    def __init__(self, config: GaterConfig, name: str = "esdb-gater-eventsourcing") -> None:
        self.config = config
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._client: GaterClient | None = None
        self._nc: Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for its result (or its exception)."""
        if self._closed:
            coro.close()
            raise BridgeClosedError("the eventsourcing_gater factory was closed")
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise RuntimeError("a recorder method was called on the NATS loop thread; call it from another thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def client(self) -> GaterClient:
        """The client (connects on first use; later calls share the connection)."""
        if self._client is not None:
            return self._client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is None:
                cfg = self.config
                self._nc = await self._connect()
                self._client = GaterClient(
                    self._nc, prefix=cfg.subject_prefix, codec="msgpack", timeout=cfg.request_timeout, token=cfg.token
                )
        return self._client

    async def _connect(self) -> Client:
        """The first connection within ``connect_timeout`` (``ConnectionError`` naming the last
        failure); once connected, lost connections are retried for ever (requests meanwhile fail
        with ``timeout``/``unavailable`` and are retried as configured)."""
        cfg = self.config
        connected = False
        last: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            last[:] = [exc]
            (log.warning if connected else log.debug)("NATS connection (%s): %s", cfg.nats_url, exc)

        options = {
            "error_cb": on_error,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": min(2.0, cfg.connect_timeout),
            "pending_size": 64 * 1024 * 1024,
            **cfg.connect_options(),
        }
        try:
            nc = await asyncio.wait_for(connection.connect(cfg.nats_url, **options), cfg.connect_timeout)
        except TimeoutError:
            cause = f": {last[0]}" if last else ""
            raise ConnectionError(f"no NATS server at {cfg.nats_url} within {cfg.connect_timeout} s{cause}") from None
        connected = True
        return nc

    async def _disconnect(self) -> None:
        nc, self._nc, self._client = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5.0)
            with contextlib.suppress(Exception):
                await nc.close()

    def close(self) -> None:
        """Close the connection and stop the thread (idempotent; pending calls are cancelled)."""
        if self._closed:
            return
        self._closed = True
        if threading.get_ident() == self._thread.ident:
            self._loop.stop()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(10.0)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
