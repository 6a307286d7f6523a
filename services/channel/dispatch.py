"""Priorities that do something: separate queues, weighted draining, shedding (docs/adr/0007-channels.md,
docs/adr/0020-shedding-on-real-overload.md).

Every accepted publish becomes a job in the queue of its channel's priority. ``workers`` tasks
take jobs by weighted round robin (default critical 8 : high 4 : normal 2 : low 1), so when the
service is behind, critical traffic goes first and low traffic still moves. Before a publish is
queued, ``admit`` sheds it with ``unavailable`` (``details.reason``) only when the service is
really behind, never because many publishes arrive at once:

* ``memory_pressure``: memory level elevated sheds low; critical sheds low and normal;
* ``overloaded``: the oldest job queued at this priority or a more important one has waited longer
  than ``shed_at[priority] * max_wait_s`` (defaults: low 25%, normal 50%, high 100% of
  ``max_queue_wait_s``), or ``max_queue`` jobs are queued (a hard cap that protects memory).

Critical is never shed, only queued. A job that waited longer than ``max_wait_s`` is dropped with
``unavailable`` (``queue_timeout``): its publisher has most likely given up already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from esdb_gater.services.channel.policy import PRIORITIES, Priority
from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.runtime.memory import MemoryMonitor

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    work: Callable[[], Awaitable[Any]]
    fut: asyncio.Future[Any]
    priority: Priority
    enqueued: float


class Dispatcher:
    def __init__(
        self,
        *,
        workers: int,
        max_queue: int,
        shed_at: Mapping[Priority, float],
        weights: Mapping[Priority, int],
        max_wait_s: float,
        memory: MemoryMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = workers
        self.max_queue = max_queue
        self.shed_at = {p: shed_at[p] for p in PRIORITIES if p in shed_at and p != "critical"}
        self.weights = {p: max(1, int(weights.get(p, 1))) for p in PRIORITIES}
        self.max_wait_s = max_wait_s
        self.memory = memory
        self.clock = clock  # a fake one in tests makes "the queue is behind" deterministic
        self._queues: dict[Priority, deque[_Job]] = {p: deque() for p in PRIORITIES}
        self._credit = dict(self.weights)
        self._available = asyncio.Semaphore(0)
        self._running = asyncio.Event()
        self._running.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.processed: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)
        self.shed: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)

    # --- state ------------------------------------------------------------------------------
    def queued(self) -> int:
        """Jobs waiting for a worker (not those in progress)."""
        return sum(len(q) for q in self._queues.values())

    def depth(self) -> dict[Priority, int]:
        return {p: len(q) for p, q in self._queues.items()}

    def behind_s(self, priority: Priority) -> float:
        """How long the oldest job queued at ``priority`` or a more important one has waited: the
        wait a new job of ``priority`` is queued behind (0 when those queues are empty)."""
        now = self.clock()
        oldest = 0.0
        for p in PRIORITIES:  # most important first
            q = self._queues[p]
            if q:
                oldest = max(oldest, now - q[0].enqueued)
            if p == priority:
                break
        return oldest

    def pause(self) -> None:
        """Stop starting jobs (they queue up); for maintenance and to build a backlog in tests."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    # --- admission --------------------------------------------------------------------------
    def admit(self, priority: Priority, channel: str) -> None:
        """Raise ``unavailable`` when this priority is being shed right now."""
        if priority == "critical":
            return
        level = self.memory.level() if self.memory is not None else "normal"
        if (level == "critical" and priority in ("normal", "low")) or (level == "elevated" and priority == "low"):
            self.shed[priority] += 1
            raise UnavailableError(
                f"{priority}-priority channel {channel!r} is shed under memory pressure ({level}); try again later",
                details={"reason": "memory_pressure", "channel": channel, "priority": priority, "memory_level": level},
            )
        queued = self.queued()
        behind = self.behind_s(priority)
        frac = self.shed_at.get(priority)
        stalled = frac is not None and behind > frac * self.max_wait_s
        if stalled or queued >= self.max_queue:
            self.shed[priority] += 1
            raise UnavailableError(
                f"the channel service is behind: {priority}-priority channel {channel!r} is shed until the "
                "backlog drains; try again later",
                details={
                    "reason": "overloaded",
                    "channel": channel,
                    "priority": priority,
                    "queued": queued,
                    "max_queue": self.max_queue,
                    "behind_s": round(behind, 3),
                    "shed_after_s": round(frac * self.max_wait_s, 3) if frac is not None else None,
                },
            )

    # --- jobs -------------------------------------------------------------------------------
    async def submit(self, priority: Priority, work: Callable[[], Awaitable[T]]) -> T:
        """Queue ``work`` at ``priority`` and wait for its result (or its exception)."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(_Job(work, fut, priority, self.clock()))
        self._empty.clear()
        self._available.release()
        return await fut

    def _pick(self) -> _Job | None:
        """Weighted round robin: each priority may take ``weight`` jobs per round, highest first;
        a round ends when no priority with work left has credit."""
        for _ in range(2):
            for p in PRIORITIES:
                if self._queues[p] and self._credit[p] > 0:
                    self._credit[p] -= 1
                    return self._queues[p].popleft()
            if not any(self._queues.values()):
                return None
            self._credit = dict(self.weights)
        return None

    async def _worker(self) -> None:
        while True:
            await self._available.acquire()
            await self._running.wait()
            job = self._pick()
            if not self.queued():
                self._empty.set()
            if job is None:
                continue
            if job.fut.done():  # the publisher went away (cancelled)
                continue
            if self.clock() - job.enqueued > self.max_wait_s:
                job.fut.set_exception(
                    UnavailableError(
                        "the publish waited too long in the channel service's queue; try again",
                        details={"reason": "queue_timeout", "priority": job.priority},
                    )
                )
                continue
            try:
                result = await job.work()
            except asyncio.CancelledError:
                if not job.fut.done():
                    job.fut.cancel()
                raise
            except Exception as exc:  # handed to the publisher, which maps it to a reply
                if not job.fut.done():
                    job.fut.set_exception(exc)
            else:
                if not job.fut.done():
                    job.fut.set_result(result)
            self.processed[job.priority] += 1

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"channel-worker-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Finish what is queued (bounded by ``max_wait_s``), then stop the workers."""
        self.resume()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), self.max_wait_s)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for q in self._queues.values():
            while q:
                job = q.popleft()
                if not job.fut.done():
                    job.fut.set_exception(UnavailableError("the channel service is stopping"))
        self._tasks = []
