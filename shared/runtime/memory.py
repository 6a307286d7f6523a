"""Memory pressure: ``normal | elevated | critical`` from used/total memory (SPEC.md §10).

``total`` is the memory available to this process, first found of:

1. ``limit_bytes`` from the configuration (``ESDB_GATER_MEMORY__LIMIT_BYTES``): a forced limit,
   with ``used`` = this process's resident set size;
2. the cgroup v2 limit (``memory.max``) or cgroup v1 limit (``memory.limit_in_bytes``) of the
   process's cgroup, when one is set, with ``used`` = the cgroup's usage minus its inactive page
   cache (what ``docker stats`` shows);
3. the machine's ``MemTotal``, with ``used`` = ``MemTotal - MemAvailable``.

The level is ``critical`` at ``used/total >= critical`` (default 0.85), ``elevated`` at
``>= elevated`` (default 0.70), else ``normal``. Tests move the level with the configuration
(a forced limit and thresholds), never by filling memory. ``MemoryMonitor`` caches a reading for
``sample_interval_s`` so hot paths can ask on every request.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = ["MemoryLevel", "MemoryMonitor", "MemoryStats", "level_for", "monitor_from", "read_stats"]

MemoryLevel = Literal["normal", "elevated", "critical"]

_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
_NO_LIMIT_V1: Final = 1 << 60  # cgroup v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True, slots=True)
class MemoryStats:
    used: int
    total: int
    level: MemoryLevel
    source: Literal["config", "cgroup2", "cgroup1", "host"]

    @property
    def ratio(self) -> float:
        return self.used / self.total if self.total > 0 else 1.0


def level_for(ratio: float, elevated: float = 0.70, critical: float = 0.85) -> MemoryLevel:
    if ratio >= critical:
        return "critical"
    if ratio >= elevated:
        return "elevated"
    return "normal"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_field(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """This process's cgroup v2 folder and cgroup v1 memory folder (either may be None)."""
    v2 = v1 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.lstrip("/")
        if controllers == "":
            v2 = root / rel
        elif "memory" in controllers.split(","):
            v1 = root / "memory" / rel
    return v2, v1


def _cgroup(root: Path) -> tuple[int, int, Literal["cgroup2", "cgroup1"]] | None:
    v2, v1 = _cgroup_dirs(root)
    # a container usually sees its own cgroup at the root of the mount
    for d in (v2, root) if v2 is not None else (root,):
        limit = _read_int(d / "memory.max")
        if limit is not None:
            usage = _read_int(d / "memory.current") or 0
            inactive = _stat_field(d / "memory.stat", "inactive_file")
            return max(0, usage - inactive), limit, "cgroup2"
    for d in (v1, root / "memory") if v1 is not None else (root / "memory",):
        limit = _read_int(d / "memory.limit_in_bytes")
        if limit is not None and limit < _NO_LIMIT_V1:
            usage = _read_int(d / "memory.usage_in_bytes") or 0
            inactive = _stat_field(d / "memory.stat", "total_inactive_file")
            return max(0, usage - inactive), limit, "cgroup1"
    return None


def _host() -> tuple[int, int]:
    total = avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if total <= 0:  # not Linux: physical pages from sysconf, and no notion of "available"
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 0
        return _rss(), total
    return total - avail, total


def _rss() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def read_stats(
    *,
    elevated: float = 0.70,
    critical: float = 0.85,
    limit_bytes: int | None = None,
    cgroup_root: Path = _CGROUP_ROOT,
) -> MemoryStats:
    """One reading (a few small file reads)."""
    if limit_bytes:
        used, total = _rss(), limit_bytes
        source: Literal["config", "cgroup2", "cgroup1", "host"] = "config"
    else:
        cg = _cgroup(cgroup_root)
        if cg is not None:
            used, total, source = cg
        else:
            used, total = _host()
            source = "host"
    ratio = used / total if total > 0 else 1.0
    return MemoryStats(used=used, total=total, level=level_for(ratio, elevated, critical), source=source)


class MemoryMonitor:
    """Cached readings: ``level()`` reads at most once per ``sample_interval_s``."""

    def __init__(
        self,
        *,
        elevated: float = 0.70,
        critical: float = 0.85,
        limit_bytes: int | None = None,
        sample_interval_s: float = 1.0,
    ) -> None:
        if not 0 < elevated <= critical:
            raise ValueError("memory thresholds need 0 < elevated <= critical")
        self.elevated = elevated
        self.critical = critical
        self.limit_bytes = limit_bytes
        self.sample_interval_s = sample_interval_s
        self._last: MemoryStats | None = None
        self._at = 0.0

    def stats(self) -> MemoryStats:
        now = time.monotonic()
        if self._last is None or now - self._at >= self.sample_interval_s:
            self._last = read_stats(elevated=self.elevated, critical=self.critical, limit_bytes=self.limit_bytes)
            self._at = now
        return self._last

    def level(self) -> MemoryLevel:
        return self.stats().level


def monitor_from(settings: object) -> MemoryMonitor:
    """The process's memory monitor, as configured (``memory.*`` settings)."""
    from esdb_gater.shared.core.settings import Settings

    assert isinstance(settings, Settings)
    mem = settings.memory
    return MemoryMonitor(
        elevated=mem.elevated,
        critical=mem.critical,
        limit_bytes=mem.limit_bytes,
        sample_interval_s=mem.sample_interval_s,
    )
