"""CPU accounting per timed window, from /proc: which process burnt the cores.

For each window the meter reports, in % of one core, the CPU time of the benchmark client, the
stream service, nats-server and the zero-work responder, plus ``other``: everything else the
machine ran meanwhile (from /proc/stat). On a 2-core machine 200 % is everything; a process near
100 % is a single-threaded bottleneck (Python's event loop), and a large ``other`` means the
numbers were taken on a busy machine.
"""

from __future__ import annotations

import os
import time

__all__ = ["CpuMeter", "background_load"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            raw = fh.read()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


def _busy_total() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            parts = fh.readline().split()
    except OSError:
        return 0.0
    vals = [int(x) for x in parts[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    guest = sum(vals[8:10]) if len(vals) > 9 else 0  # already counted in user/nice
    return (sum(vals) - idle - guest) / _TICK


class CpuMeter:
    """``pids``: a name (column) to the processes it sums, e.g. every service instance."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = {name: list(p) for name, p in pids.items()}
        self._t0 = 0.0
        self._p0: dict[str, float] = {}
        self._b0 = 0.0

    def begin(self) -> None:
        self._t0 = time.perf_counter()
        self._p0 = {name: sum(map(_proc_cpu, pids)) for name, pids in self.pids.items()}
        self._b0 = _busy_total()

    def end(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        if wall <= 0:
            return {}
        used = {name: sum(map(_proc_cpu, pids)) - self._p0.get(name, 0.0) for name, pids in self.pids.items()}
        busy = _busy_total() - self._b0
        out = {name: round(100.0 * v / wall, 1) for name, v in used.items()}
        out["other"] = round(max(0.0, 100.0 * (busy - sum(used.values())) / wall), 1)
        return out


def background_load(seconds: float = 1.0) -> float:
    """Busy CPU of the whole machine over ``seconds``, in % of one core (before we start)."""
    b0 = _busy_total()
    time.sleep(seconds)
    return round(100.0 * (_busy_total() - b0) / seconds, 1)
