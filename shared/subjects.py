"""Every subject and JetStream name the gateway uses. Nothing else spells a subject.

API requests: ``<prefix>.api.<store>.<service>.<op>`` (store ``_`` for store-less ops).
Event log:    ``<prefix>.log.<store>.e.<stream token>`` in the JetStream stream ``<prefix>-log-<store>``.
Index:        ``<prefix>.ix.<store>.<kind>.<token>`` in the stream ``<prefix>-ix-<store>``.

The log lives under its own root so NATS permissions can let clients call ``<prefix>.api.>``
without letting them write to the log (SPEC.md §2).

Stream ids are arbitrary UTF-8 (dots, ``*``, ``>``, spaces, ``$``, unicode); each becomes exactly
one subject token: bytes in ``[A-Za-z0-9_-]`` stay as they are and every other byte becomes
``%XX`` (upper-case hex). The mapping is injective (``%`` itself is escaped), so no stream id can
name another stream's subject, and ids like ``orders-42`` stay readable in ``nats`` tooling.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MAX_STREAM_ID_BYTES",
    "PREFIX_RE",
    "STORE_RE",
    "Subjects",
    "decode_token",
    "encode_token",
]

STORE_RE: Final = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
PREFIX_RE: Final = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")
MAX_STREAM_ID_BYTES: Final = 256

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE: Final = tuple(chr(b) if b in _SAFE else f"%{b:02X}" for b in range(256))


def encode_token(value: str) -> str:
    """One subject token for an arbitrary UTF-8 string (injective, readable for plain ids)."""
    if value.isascii() and all(c.isalnum() or c in "_-" for c in value):
        return value
    return "".join(_ESCAPE[b] for b in value.encode("utf-8"))


def decode_token(token: str) -> str:
    """Inverse of ``encode_token``."""
    if "%" not in token:
        return token
    out = bytearray()
    i = 0
    n = len(token)
    while i < n:
        c = token[i]
        if c == "%":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(c))
            i += 1
    return out.decode("utf-8")


class Subjects:
    """Subject builders for one prefix (``esdb`` by default)."""

    def __init__(self, prefix: str = "esdb") -> None:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"invalid subject prefix {prefix!r}")
        self.prefix = prefix

    # --- API ------------------------------------------------------------------------------
    def api(self, store: str, service: str, op: str) -> str:
        return f"{self.prefix}.api.{store}.{service}.{op}"

    def api_endpoint(self, service: str, op: str) -> str:
        """The subscription subject of an endpoint: any store."""
        return f"{self.prefix}.api.*.{service}.{op}"

    def store_of(self, subject: str) -> str:
        """The store token of an API request subject."""
        parts = subject.split(".")
        return parts[2] if len(parts) > 2 else ""

    # --- event log --------------------------------------------------------------------------
    def log_stream(self, store: str) -> str:
        return f"{self.prefix}-log-{store}"

    def log_root(self, store: str) -> str:
        return f"{self.prefix}.log.{store}"

    def log_all(self, store: str) -> str:
        """Filter matching every event stream of a store."""
        return f"{self.prefix}.log.{store}.e.*"

    def log_subject(self, store: str, stream_id: str) -> str:
        return f"{self.prefix}.log.{store}.e.{encode_token(stream_id)}"

    def stream_id_of(self, subject: str) -> str:
        """The stream id of a log subject."""
        return decode_token(subject.rsplit(".", 1)[1])

    # --- indexes ----------------------------------------------------------------------------
    def index_stream(self, store: str) -> str:
        return f"{self.prefix}-ix-{store}"

    def index_root(self, store: str) -> str:
        return f"{self.prefix}.ix.{store}"

    def index_event_id(self, store: str, event_id: str) -> str:
        return f"{self.prefix}.ix.{store}.id.{encode_token(event_id)}"
