"""shared/log/quotas.py: quota checks and per-store state that is dropped when idle (ADR 0016)."""

from __future__ import annotations

import pytest

from esdb_gater.shared.core.errors import QuotaExceededError
from esdb_gater.shared.log.quotas import IdleMap, check_quota


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_check_quota() -> None:
    check_quota("links_per_store", 3, 2, "s")  # room for one more
    check_quota("links_per_store", 0, 10**6, "s")  # 0 = no limit
    with pytest.raises(QuotaExceededError) as err:
        check_quota("links_per_store", 3, 3, "s")
    e = err.value
    assert (e.status, e.code.value, e.retryable) == (429, "quota_exceeded", False)
    assert e.details == {"quota": "links_per_store", "limit": 3, "store": "s"}


def test_idle_entries_are_dropped_and_used_ones_kept() -> None:
    clock = Clock()
    evicted: list[str] = []
    m: IdleMap[str, int] = IdleMap(10.0, clock=clock, on_evict=lambda k, v: evicted.append(k))
    for i in range(1000):  # a client cycling through random store names
        m[f"store-{i}"] = i
    assert len(m) == 1000
    clock.now = 5.0
    assert m.get("store-7") == 7  # used: its idle time starts again
    clock.now = 12.0
    m["new"] = 1  # a write sweeps what has been idle too long
    assert len(m) == 2 and "store-7" in m and "new" in m
    assert len(evicted) == 999
    clock.now = 100.0
    assert m.get("store-7") is None  # expired on read too
    assert m.sweep() == 1 and len(m) == 0


def test_set_semantics() -> None:
    clock = Clock()
    m: IdleMap[str, bool] = IdleMap(1.0, clock=clock)
    m.add("a")
    assert "a" in m and "b" not in m
    m.discard("a")
    assert "a" not in m
