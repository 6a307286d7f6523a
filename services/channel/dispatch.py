"""Priorities that do something: separate queues, weighted draining, shedding (docs/adr/0007-channels.md,
docs/adr/0020-shedding-on-real-overload.md).

At most ``workers`` accepted publishes are delivered at once (each a *slot*). A publish that finds
a free slot and nothing queued runs at once, in its own task; otherwise it becomes a job in the
queue of its channel's priority and waits. Each slot that frees up goes to the next job by
weighted round robin (default critical 8 : high 4 : normal 2 : low 1), so when the service is
behind, critical traffic goes first and low traffic still moves. Before a publish is queued,
``admit`` sheds it with ``unavailable`` (``details.reason``) only when the service is really
behind, never because many publishes arrive at once:

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
    fut: asyncio.Future[None]  # its result: the job now holds a slot and may run
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
        self._all_queues = tuple(self._queues.values())
        self._credit = dict(self.weights)
        self._free = 0  # slots nobody holds; ``workers`` once started
        self._started = False
        self._paused = False
        self._empty = asyncio.Event()
        self._empty.set()
        self.processed: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)
        self.shed: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)

    # --- state ------------------------------------------------------------------------------
    def queued(self) -> int:
        """Jobs waiting for a slot (not those in progress)."""
        c, h, n, lo = self._all_queues
        return len(c) + len(h) + len(n) + len(lo)

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
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._dispatch()

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
        if not queued:  # nothing queued: nothing waited, and max_queue is at least 1
            return
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
        """Run ``work`` at ``priority`` once it has a slot and return its result (or raise its
        exception). It runs in the caller's task: at once when a slot is free and nothing is
        queued, else when the weighted round robin gives the queued job a freed slot."""
        if self._free > 0 and self._started and not self._paused and not self.queued():
            self._free -= 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queues[priority].append(_Job(work, fut, priority, self.clock()))
            self._empty.clear()
            self._dispatch()
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._release()  # the slot came just as the publisher went away: pass it on
                raise
        cancelled = False
        try:
            return await work()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if not cancelled:
                self.processed[priority] += 1
            self._release()

    def _release(self) -> None:
        self._free += 1
        if self.queued():  # else there is nobody to hand the slot to (and _empty is already set)
            self._dispatch()

    def _dispatch(self) -> None:
        """Give the free slots to queued jobs, in weighted round robin order; drop the ones that
        waited too long."""
        while self._free > 0 and self._started and not self._paused:
            job = self._pick()
            if job is None:
                break
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
            self._free -= 1
            job.fut.set_result(None)
        if not self.queued():
            self._empty.set()

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

    async def start(self) -> None:
        self._started = True
        self._free = self.workers
        self._dispatch()

    async def stop(self) -> None:
        """Finish what is queued (bounded by ``max_wait_s``), then refuse what is left."""
        self.resume()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), self.max_wait_s)
        self._started = False
        self._free = 0
        for q in self._queues.values():
            while q:
                job = q.popleft()
                if not job.fut.done():
                    job.fut.set_exception(UnavailableError("the channel service is stopping"))
        self._empty.set()
