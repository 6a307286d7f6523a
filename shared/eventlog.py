"""The event log's record format, shared by every service that reads the log.

One JetStream message per append (a *commit*, ADR 0002): subject ``<prefix>.log.<store>.e.<token>``,
headers ``Esdb-Version`` (version of the first event) and ``Esdb-Count``, body a msgpack list of
events with short keys: ``i`` id, ``t`` type, ``d`` data, ``m`` metadata, ``g`` tags, ``c`` data
content type and ``k`` metadata content type (the last four only when not the default). The
commit's JetStream timestamp is its events' ``epoch_us``/``timestamp`` and its sequence their
``position``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from shared.jetstream import StoredMsg
from shared.models.stream import EventIn

__all__ = [
    "H_COUNT",
    "H_VERSION",
    "JSON_CT",
    "Commit",
    "commit_of",
    "decode_commit",
    "encode_events",
    "new_event_id",
]

H_VERSION: Final = "Esdb-Version"
H_COUNT: Final = "Esdb-Count"
JSON_CT: Final = "application/json"


@dataclass(slots=True, frozen=True)
class Commit:
    """One stored append: where it is and which versions it holds."""

    seq: int
    first: int
    count: int
    ts_ns: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


def commit_of(sm: StoredMsg) -> Commit:
    return Commit(seq=sm.seq, first=int(sm.headers[H_VERSION]), count=int(sm.headers[H_COUNT]), ts_ns=sm.ts_ns)


def encode_events(events: list[EventIn], ids: list[str]) -> bytes:
    rows = []
    for ev, eid in zip(events, ids, strict=True):
        row: dict[str, Any] = {"i": eid, "t": ev.event_type, "d": ev.data}
        if ev.metadata:
            row["m"] = ev.metadata
        if ev.tags is not None:
            row["g"] = ev.tags
        if ev.data_content_type != JSON_CT:
            row["c"] = ev.data_content_type
        if ev.metadata_content_type != JSON_CT:
            row["k"] = ev.metadata_content_type
        rows.append(row)
    return msgpack.packb(rows, use_bin_type=True)  # type: ignore[no-any-return]


def decode_commit(sm: StoredMsg, stream_id: str) -> list[dict[str, Any]]:
    """The events of a commit, as RecordedEvent dicts."""
    first = int(sm.headers[H_VERSION])
    epoch_us = sm.ts_ns // 1000
    ts_ms = sm.ts_ns // 1_000_000
    rows = msgpack.unpackb(sm.data, raw=False)
    out = []
    for i, row in enumerate(rows):
        dct = row.get("c", JSON_CT)
        out.append(
            {
                "event_id": row["i"],
                "event_type": row["t"],
                "stream_id": stream_id,
                "version": first + i,
                "data": row.get("d"),
                "metadata": row.get("m", {}),
                "tags": row.get("g"),
                "timestamp": ts_ms,
                "epoch_us": epoch_us,
                "position": sm.seq,
                "data_content_type": dct,
                "metadata_content_type": row.get("k", JSON_CT),
            }
        )
    return out


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562: 48-bit ms timestamp, version 7, variant 10, random rest)."""
    b = bytearray(time.time_ns().__floordiv__(1_000_000).to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
