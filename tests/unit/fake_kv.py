"""A fake of the compare-and-set part of a NATS KV bucket (nats-py's ``KeyValue``), one key."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

__all__ = ["FakeKV"]


class FakeKV:
    """The compare-and-set part of a KV bucket (nats-py's KeyValue)."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.revision = 0

    async def get(self, key: str) -> Any:
        if self.value is None:
            raise KeyNotFoundError
        return SimpleNamespace(value=self.value, revision=self.revision)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if last != self.revision:
            raise KeyWrongLastSequenceError
        self.value, self.revision = value, self.revision + 1
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        return await self.update(key, value, 0)
