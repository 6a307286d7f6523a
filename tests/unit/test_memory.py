"""Memory levels: thresholds, a limit forced by configuration, cgroup v2/v1 limits read from a
fake cgroup folder, the host fallback, and the monitor's cache. Levels are driven by
configuration, never by filling memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from esdb_gater.shared.core.settings import MemorySettings, Settings
from esdb_gater.shared.runtime import memory
from esdb_gater.shared.runtime.memory import MemoryMonitor, level_for, read_stats


def test_levels_from_thresholds() -> None:
    assert level_for(0.0) == "normal"
    assert level_for(0.6999) == "normal"
    assert level_for(0.70) == "elevated"
    assert level_for(0.8499) == "elevated"
    assert level_for(0.85) == "critical"
    assert level_for(1.7) == "critical"
    assert level_for(0.5, elevated=0.4, critical=0.9) == "elevated"
    assert level_for(0.95, elevated=0.4, critical=0.9) == "critical"


def test_a_forced_limit_drives_the_level() -> None:
    tiny = read_stats(limit_bytes=1)
    assert tiny.source == "config" and tiny.total == 1 and tiny.used > 0
    assert tiny.level == "critical"
    huge = read_stats(limit_bytes=1 << 60)
    assert huge.level == "normal" and huge.ratio < 0.001
    # thresholds move it between the two: used/total is ~1e-10 here
    assert read_stats(limit_bytes=1 << 60, elevated=1e-15, critical=0.99).level == "elevated"


def _fake_v2(root: Path, limit: str, current: int, inactive: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "memory.max").write_text(limit + "\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\nactive_file 3\n")


def test_cgroup_v2_limit(tmp_path: Path) -> None:
    _fake_v2(tmp_path, str(1000 * 1024 * 1024), 900 * 1024 * 1024, 100 * 1024 * 1024)
    stats = read_stats(cgroup_root=tmp_path)
    assert stats.source == "cgroup2"
    assert stats.total == 1000 * 1024 * 1024
    assert stats.used == 800 * 1024 * 1024  # page cache that can be dropped does not count
    assert stats.level == "elevated"
    _fake_v2(tmp_path, str(1000), 990, 0)
    assert read_stats(cgroup_root=tmp_path).level == "critical"


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    d = tmp_path / "memory"
    d.mkdir()
    (d / "memory.limit_in_bytes").write_text("2000\n")
    (d / "memory.usage_in_bytes").write_text("1000\n")
    (d / "memory.stat").write_text("cache 5\ntotal_inactive_file 100\n")
    stats = read_stats(cgroup_root=tmp_path)
    assert (stats.source, stats.used, stats.total, stats.level) == ("cgroup1", 900, 2000, "normal")
    (d / "memory.limit_in_bytes").write_text(str(9223372036854771712))  # v1's "no limit"
    assert read_stats(cgroup_root=tmp_path).source == "host"


def test_no_cgroup_limit_falls_back_to_the_host(tmp_path: Path) -> None:
    _fake_v2(tmp_path, "max", 5, 0)
    stats = read_stats(cgroup_root=tmp_path)
    assert stats.source == "host"
    assert stats.used > 0 and stats.used <= stats.total
    assert stats.level in ("normal", "elevated", "critical")


def test_monitor_caches_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = memory.read_stats

    def counting(**kw: object) -> memory.MemoryStats:
        calls.append(kw)
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(memory, "read_stats", counting)
    mon = MemoryMonitor(limit_bytes=1, sample_interval_s=3600)
    assert mon.level() == "critical"
    assert mon.level() == "critical"
    assert len(calls) == 1
    fresh = MemoryMonitor(limit_bytes=1 << 60, sample_interval_s=0)
    assert fresh.level() == "normal" and fresh.level() == "normal"
    assert len(calls) == 3
    with pytest.raises(ValueError):
        MemoryMonitor(elevated=0.9, critical=0.5)


def test_memory_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESDB_GATER_MEMORY__LIMIT_BYTES", "4096")
    monkeypatch.setenv("ESDB_GATER_MEMORY__ELEVATED", "0.5")
    s = Settings().memory
    assert (s.limit_bytes, s.elevated, s.critical) == (4096, 0.5, 0.85)
    with pytest.raises(ValueError):
        MemorySettings(elevated=0.9, critical=0.8)
