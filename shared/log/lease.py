"""A lease in a JetStream KV bucket: "this instance drives that thing" for a few seconds at a time.

Used where exactly one service instance must do a job (deliver a subscription, drive a link, run
a retention policy) while any instance may take over when the holder dies. The value is
``{"owner", "expires"}``; taking or renewing it is a compare-and-set on the key's revision, so
two instances can never both succeed for the same revision. Expiry compares wall clocks, so the
TTL must exceed the clock skew between hosts (seconds, with NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Generic, Protocol, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

__all__ = ["Lease", "LeaseSupervisor", "Worker", "lease_holder"]

_log = logging.getLogger(__name__)


def lease_holder(value: bytes | None, now: float | None = None) -> str | None:
    """The owner of a lease value, or None when it is free or expired."""
    if not value:
        return None
    try:
        held = json.loads(value)
    except ValueError:
        return None
    if float(held.get("expires", 0)) < (time.time() if now is None else now):
        return None
    owner = held.get("owner")
    return str(owner) if owner else None


class Lease:
    def __init__(self, kv: Any, key: str, owner: str, ttl_s: float) -> None:
        self.kv = kv
        self.key = key
        self.owner = owner
        self.ttl_s = ttl_s
        self.held = False
        self.expires = 0.0  # when the lease we last wrote runs out (unix time, our clock)

    def _value(self, expires: float) -> bytes:
        return json.dumps({"owner": self.owner, "expires": expires}).encode()

    async def acquire_or_renew(self) -> bool:
        """Take the lease if free or expired, renew it if ours; True while we hold it."""
        now = time.time()
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            entry = None
        try:
            if entry is None or not entry.value:
                await self.kv.create(self.key, self._value(now + self.ttl_s))
            else:
                holder = lease_holder(entry.value, now)
                if holder not in (None, self.owner):
                    self.held = False
                    self.expires = 0.0
                    return False
                await self.kv.update(self.key, self._value(now + self.ttl_s), last=entry.revision)
        except KeyWrongLastSequenceError:
            self.held = False  # someone else moved first
            return False
        self.held = True
        self.expires = now + self.ttl_s
        return True

    def valid(self, margin_s: float) -> bool:
        """Held, and by our clock still ``margin_s`` away from running out: a worker whose
        actions must never overlap another holder's checks this before each one (another
        instance takes the lease only after it ran out, by that instance's clock)."""
        return self.held and time.time() + margin_s < self.expires

    async def release(self) -> None:
        """Give the lease up at once (on shutdown), so another instance need not wait for expiry."""
        if not self.held:
            return
        self.held = False
        self.expires = 0.0
        try:
            entry = await self.kv.get(self.key)
            if lease_holder(entry.value) == self.owner:
                await self.kv.update(self.key, self._value(0), last=entry.revision)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            pass


K = tuple[str, str]


class Worker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


D = TypeVar("D")
W = TypeVar("W", bound=Worker)


class LeaseSupervisor(Generic[D, W]):
    """Runs in every instance: keeps a worker going for each wanted item whose lease it holds.

    Subclasses say what is wanted (``wanted``), how its lease is named (``lease_key``) and how a
    worker is made (``make_worker``); this class takes free or expired leases, renews its own,
    and stops a worker whose item went away, whose lease was lost or that ``finished``."""

    name = "lease-supervisor"

    def __init__(self, kv: Any, owner: str, lease_ttl_s: float = 5.0) -> None:
        self.kv = kv
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s
        self.workers: dict[K, tuple[W, Lease]] = {}
        self.items: dict[K, D] = {}  # as of the last reconcile
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- what subclasses provide ----------------------------------------------------------
    async def wanted(self) -> dict[K, D]:
        raise NotImplementedError

    def lease_key(self, key: K) -> str:
        raise NotImplementedError

    def make_worker(self, item: D) -> W:
        raise NotImplementedError

    def finished(self, worker: W) -> bool:
        return False

    def started(self, worker: W, lease: Lease) -> None:
        """Called when ``worker`` starts under ``lease`` (to let it check the lease itself)."""

    # --- the loop ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def poke(self) -> None:
        """Look again now (something was saved or removed here)."""
        self._wake.set()

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def stop(self) -> None:
        await self._cancel()
        for worker, lease in list(self.workers.values()):
            await worker.stop()
            with contextlib.suppress(Exception):
                await lease.release()
        self.workers.clear()

    async def abandon(self) -> None:
        """Stop without releasing leases or finishing anything: what a crash looks like."""
        await self._cancel()
        for worker, _ in list(self.workers.values()):
            await worker.stop()
        self.workers.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.warning("%s: reconcile failed", self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.lease_ttl_s / 4)

    async def reconcile(self) -> None:
        items = await self.wanted()
        self.items = items
        for k in list(self.workers):
            worker, lease = self.workers[k]
            if k not in items or self.finished(worker):
                self.workers.pop(k)
                await worker.stop()
                await lease.release()
        for k, item in items.items():
            running = self.workers.get(k)
            lease = running[1] if running else Lease(self.kv, self.lease_key(k), self.owner, self.lease_ttl_s)
            held = await lease.acquire_or_renew()
            if held and running is None:
                worker = self.make_worker(item)
                self.started(worker, lease)
                await worker.start()
                self.workers[k] = (worker, lease)
            elif not held and running is not None:
                self.workers.pop(k)
                await running[0].stop()
