"""Timing loops and their statistics.

An *op* is an ``async () -> None`` callable doing one operation (one append, one read …) and
raising nothing: ops count their own errors. ``sequential`` runs one op after another for a fixed
window; ``concurrent`` runs N workers, each sequential, against one shared deadline. Each op's
latency is measured around its ``await``; rates are completed ops over the window's wall time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Interrupted", "Op", "Sample", "check_stop", "concurrent", "request_stop", "sequential", "set_meter"]

Op = Callable[[], Awaitable[None]]


class _Meter(Protocol):
    def begin(self) -> None: ...

    def end(self) -> dict[str, float]: ...


_meter: _Meter | None = None
_stop = False


class Interrupted(BaseException):
    """Ctrl-C / SIGTERM, raised at the next operation boundary (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` in an op swallows it)."""


def request_stop() -> None:
    """Make every timing loop stop at its next operation (a signal handler calls this, in
    addition to cancelling the main task: asyncio.wait_for in Python 3.11 can swallow a
    cancellation that races with a reply)."""
    global _stop
    _stop = True


def check_stop() -> None:
    if _stop:
        raise Interrupted


def set_meter(meter: _Meter | None) -> None:
    """A CPU meter (esdb_gater.bench.cpu.CpuMeter) to read around every timed window."""
    global _meter
    _meter = meter


def _begin() -> None:
    if _meter is not None:
        _meter.begin()


def _end() -> dict[str, float]:
    return _meter.end() if _meter is not None else {}


@dataclass
class Sample:
    """The outcome of one timed window."""

    ops: int
    elapsed: float
    latencies: list[float] = field(repr=False)
    events_per_op: int = 1
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core per process

    @property
    def ops_s(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def events_s(self) -> float:
        return self.ops_s * self.events_per_op

    def pct(self, q: float) -> float:
        """The q-quantile of the latencies in ms (nearest rank)."""
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        k = min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))
        return xs[k] * 1000.0

    @property
    def p50(self) -> float:
        return self.pct(0.50)

    @property
    def p99(self) -> float:
        return self.pct(0.99)

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "seconds": round(self.elapsed, 4),
            "ops_per_s": round(self.ops_s, 2),
            "events_per_s": round(self.events_s, 2),
            "p50_ms": round(self.p50, 4),
            "p99_ms": round(self.p99, 4),
            "errors": self.errors,
            "cpu_percent_of_one_core": self.cpu,
        }


async def sequential(
    op: Op, duration: float, warmup: int = 20, events_per_op: int = 1, errors: Callable[[], int] | None = None
) -> Sample:
    """``op`` back to back for ``duration`` seconds, after an untimed warm-up of at least
    ``warmup`` calls and a tenth of ``duration``."""
    await _warm([op], warmup, duration / 10)
    before = errors() if errors else 0
    lat: list[float] = []
    clock = time.perf_counter
    _begin()
    start = clock()
    deadline = start + duration
    end = start
    while end < deadline:
        if _stop:
            raise Interrupted
        t0 = clock()
        await op()
        end = clock()
        lat.append(end - t0)
    cpu = _end()
    return Sample(len(lat), end - start, lat, events_per_op, (errors() if errors else 0) - before, cpu)


async def concurrent(
    ops: Sequence[Op], duration: float, warmup: int = 5, events_per_op: int = 1, errors: Callable[[], int] | None = None
) -> Sample:
    """One worker per op, all running for ``duration`` seconds; latencies of every worker."""
    await _warm(ops, warmup, duration / 10)
    before = errors() if errors else 0
    clock = time.perf_counter
    _begin()
    start = clock()
    deadline = start + duration
    lats: list[list[float]] = [[] for _ in ops]
    ends: list[float] = [start for _ in ops]

    async def worker(i: int) -> None:
        op = ops[i]
        out = lats[i]
        end = start
        while end < deadline:
            if _stop:
                raise Interrupted
            t0 = clock()
            await op()
            end = clock()
            out.append(end - t0)
        ends[i] = end

    await asyncio.gather(*(worker(i) for i in range(len(ops))))
    cpu = _end()
    lat = [x for xs in lats for x in xs]
    return Sample(len(lat), max(ends) - start, lat, events_per_op, (errors() if errors else 0) - before, cpu)


async def _warm(ops: Sequence[Op], n: int, seconds: float) -> None:
    """Each op at least ``n`` times and until ``seconds`` have passed (untimed)."""
    deadline = time.perf_counter() + seconds

    async def one(op: Op) -> None:
        i = 0
        while i < n or time.perf_counter() < deadline:
            check_stop()
            await op()
            i += 1

    await asyncio.gather(*(one(op) for op in ops))
