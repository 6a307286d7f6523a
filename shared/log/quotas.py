"""Bounded resources (docs/adr/0016-reserved-streams-and-quotas.md): per-store quotas and
per-store state in memory that is dropped when idle.

* ``check_quota`` raises ``quota_exceeded`` (429, not retryable) when a count read from the
  store's KV or JetStream state has reached its limit. Counts are read, not kept in memory, so
  every instance enforces the same quota; two creators racing may each see ``limit - 1`` and
  both succeed, so a quota can be exceeded by at most the number of concurrent creators.
* ``IdleMap`` is a dict whose entries are dropped once nobody has touched them for
  ``idle_s`` seconds, so a client cycling through random store names cannot grow a service's
  memory without bound. Eviction is amortised over writes (entries are kept in order of last
  use) and can be forced with ``sweep``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from esdb_gater.shared.core.errors import QuotaExceededError

__all__ = ["IdleMap", "check_quota"]

K = TypeVar("K")
V = TypeVar("V")


def check_quota(quota: str, limit: int, count: int, store: str) -> None:
    """``quota_exceeded`` when ``count`` (what exists now) leaves no room for one more; a limit
    of 0 means no limit."""
    if limit > 0 and count >= limit:
        raise QuotaExceededError(
            f"store {store!r} has reached its {quota} quota ({limit}); remove something first",
            details={"quota": quota, "limit": limit, "store": store},
        )


class IdleMap(Generic[K, V]):
    """A mapping whose entries expire ``idle_s`` seconds after their last use (get or set)."""

    def __init__(
        self,
        idle_s: float,
        *,
        on_evict: Callable[[K, V], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.on_evict = on_evict
        self.clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items and self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._items))

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        now = self.clock()
        if now - item[1] > self.idle_s:
            self._evict(key)
            return None
        self._items[key] = (item[0], now)
        self._items.move_to_end(key)
        return item[0]

    def __getitem__(self, key: K) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = (value, self.clock())
        self._items.move_to_end(key)
        self.sweep()

    def add(self, key: K) -> None:
        """For a set of keys (``IdleMap[str, bool]``)."""
        self[key] = True  # type: ignore[assignment]

    def pop(self, key: K, default: V | None = None) -> V | None:
        item = self._items.pop(key, None)
        return default if item is None else item[0]

    def discard(self, key: K) -> None:
        self._items.pop(key, None)

    def values(self) -> list[V]:
        return [v for v, _ in self._items.values()]

    def clear(self) -> None:
        self._items.clear()

    def sweep(self) -> int:
        """Drop every entry idle for longer than ``idle_s``; returns how many."""
        cutoff = self.clock() - self.idle_s
        n = 0
        while self._items:
            key, (_, used) = next(iter(self._items.items()))
            if used > cutoff:
                break
            self._evict(key)
            n += 1
        return n

    def _evict(self, key: K) -> None:
        value, _ = self._items.pop(key)
        if self.on_evict is not None:
            self.on_evict(key, value)
