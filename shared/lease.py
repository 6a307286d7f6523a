"""A lease in a JetStream KV bucket: "this instance drives that thing" for a few seconds at a time.

Used where exactly one service instance must do a job (deliver a subscription, drive a link, run
a retention policy) while any instance may take over when the holder dies. The value is
``{"owner", "expires"}``; taking or renewing it is a compare-and-set on the key's revision, so
two instances can never both succeed for the same revision. Expiry compares wall clocks, so the
TTL must exceed the clock skew between hosts (seconds, with NTP).
"""

from __future__ import annotations

import json
import time
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

__all__ = ["Lease", "lease_holder"]


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
                    return False
                await self.kv.update(self.key, self._value(now + self.ttl_s), last=entry.revision)
        except KeyWrongLastSequenceError:
            self.held = False  # someone else moved first
            return False
        self.held = True
        return True

    async def release(self) -> None:
        """Give the lease up at once (on shutdown), so another instance need not wait for expiry."""
        if not self.held:
            return
        self.held = False
        try:
            entry = await self.kv.get(self.key)
            if lease_holder(entry.value) == self.owner:
                await self.kv.update(self.key, self._value(0), last=entry.revision)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            pass
