"""The event log's record format, shared by every service that reads the log.

One JetStream message per append (a *commit*, ADR 0002): subject ``<prefix>.log.<store>.e.<token>``,
headers ``Esdb-Version`` (version of the first event) and ``Esdb-Count``, body a msgpack list of
events with short keys: ``i`` id, ``t`` type, ``d`` data, ``m`` metadata, ``g`` tags, ``c`` data
content type and ``k`` metadata content type (the last four only when not the default). The
commit's JetStream timestamp is its events' ``epoch_us``/``timestamp`` and its sequence their
``position``.

A message on a log subject that is not such a commit (someone with JetStream rights published
raw into the log: no ``Esdb-Version``/``Esdb-Count``, or a body that is not a list of events) is a
*corrupt entry*: ``decode_commit`` yields no events for it, ``is_commit`` says so, and it is
logged (once per position) and counted (``esdb.log.corrupt_entries``), so no reader of the log
dies on it (issue 10, docs/adr/0013-reply-and-target-subjects.md).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from esdb_gater.shared.core.ids import new_event_id
from esdb_gater.shared.core.telemetry import instruments
from esdb_gater.shared.log.jetstream import StoredMsg
from esdb_gater.shared.models.stream import EventIn

__all__ = [
    "H_COUNT",
    "H_VERSION",
    "JSON_CT",
    "Commit",
    "CorruptEntryError",
    "commit_of",
    "corrupt_entry",
    "decode_commit",
    "encode_events",
    "event_ids",
    "is_commit",
    "new_event_id",
]

H_VERSION: Final = "Esdb-Version"
H_COUNT: Final = "Esdb-Count"
JSON_CT: Final = "application/json"
_MAX_VERSION: Final = 2**62

log = logging.getLogger(__name__)


class CorruptEntryError(ValueError):
    """A message on a log subject that is not a commit (``commit_of`` of a corrupt entry)."""


@dataclass(slots=True, frozen=True)
class Commit:
    """One stored append: where it is and which versions it holds. ``tail``: the sequence of
    the last message on the stream's subject when corrupt entries follow this commit (0 when
    this commit is the last); a head with ``count`` 0 stands for a stream holding only corrupt
    entries (version -1)."""

    seq: int
    first: int
    count: int
    ts_ns: int
    tail: int = 0

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def subject_seq(self) -> int:
        """What ``Nats-Expected-Last-Subject-Sequence`` of the next append must say."""
        return max(self.seq, self.tail)


def _header_ints(sm: StoredMsg) -> tuple[int, int] | None:
    try:
        first = int(sm.headers[H_VERSION])
        count = int(sm.headers[H_COUNT])
    except (KeyError, ValueError, TypeError):
        return None
    if not (0 <= first <= _MAX_VERSION and 1 <= count <= _MAX_VERSION):
        return None
    return first, count


def is_commit(sm: StoredMsg) -> bool:
    """Cheap check (headers, and a body that starts as a msgpack array) that ``sm`` is a commit."""
    return _header_ints(sm) is not None and bool(sm.data) and (0x90 <= sm.data[0] <= 0x9F or sm.data[0] in (0xDC, 0xDD))


_reported: OrderedDict[tuple[str, int], None] = OrderedDict()
_reported_lock = threading.Lock()


def corrupt_entry(sm: StoredMsg, reader: str, reason: str = "not a commit") -> None:
    """Count (``esdb.log.corrupt_entries``) and log once (per subject and position, bounded
    memory) a message on a log subject that is not a commit."""
    instruments().corrupt.add(1, {"reader": reader})
    key = (sm.subject, sm.seq)
    with _reported_lock:  # also called from the pattern worker threads (link filters)
        if key in _reported:
            return
        _reported[key] = None
        if len(_reported) > 1024:
            _reported.popitem(last=False)
    log.warning("corrupt_entry: %s at position %d is %s; %s skips it", sm.subject[:200], sm.seq, reason, reader)


def commit_of(sm: StoredMsg) -> Commit:
    """The commit's place and versions; ``CorruptEntryError`` for a message that is not one."""
    ints = _header_ints(sm)
    if ints is None:
        raise CorruptEntryError(f"{sm.subject} at {sm.seq} is not a commit")
    return Commit(seq=sm.seq, first=ints[0], count=ints[1], ts_ns=sm.ts_ns)


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


def event_ids(sm: StoredMsg) -> list[str] | None:
    """The event ids of a commit, from its body alone; None when the body is not a list of events."""
    try:
        return [str(row["i"]) for row in msgpack.unpackb(sm.data, raw=False)]
    except Exception:  # msgpack raises many unrelated types for bad input
        return None


def decode_commit(sm: StoredMsg, stream_id: str, reader: str = "log") -> list[dict[str, Any]]:
    """The events of a commit, as RecordedEvent dicts; none (reported by ``corrupt_entry``)
    for a message that is not a commit."""
    ints = _header_ints(sm)
    if ints is None:
        corrupt_entry(sm, reader, "missing Esdb-Version/Esdb-Count")
        return []
    first, count = ints
    try:
        rows = msgpack.unpackb(sm.data, raw=False)
    except Exception:  # msgpack raises many unrelated types for bad input
        rows = None
    if (
        not isinstance(rows, list)
        or len(rows) != count
        or not all(isinstance(r, dict) and isinstance(r.get("i"), str) and isinstance(r.get("t"), str) for r in rows)
    ):
        corrupt_entry(sm, reader, "not a list of events")
        return []
    epoch_us = sm.ts_ns // 1000
    ts_ms = sm.ts_ns // 1_000_000
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
