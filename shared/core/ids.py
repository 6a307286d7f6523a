"""Event ids: UUIDv7, made by the stream service for events without one and by the client
before its first try (so a retried append is recognised as the same one)."""

from __future__ import annotations

import os
import time

__all__ = ["new_event_id"]


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562: 48-bit ms timestamp, version 7, variant 10, random rest)."""
    b = bytearray(time.time_ns().__floordiv__(1_000_000).to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
