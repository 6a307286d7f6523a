"""A store's index stream ``<prefix>-ix-<store>``: its config and its records, owned here.

One message per subject, the last value wins (docs/adr/0002-event-log-layout.md,
docs/adr/0012-causation-index.md, docs/adr/0017-linear-patterns-and-index-repair.md):

* ``<prefix>.ix.<store>.id.<token(event_id)>`` → ``IndexEntry``: the append holding the event.
  The stream service writes it for appends whose events all carry caller ids (keyed by the first
  id); the causation indexer for every event;
* ``….cause.<token(causation_id)>.<position>`` and ``….corr.<token(correlation_id)>.<position>``
  → empty: the append at that position holds events with that id (the causation indexer, one
  record per id and append; ``ref_subject``/``parse_ref``). Earlier versions wrote one per event,
  ``….cause.<token(cid)>.<token(event_id)>`` → ``IndexEntry``; both are read (an empty value
  tells the two apart);
* ``<prefix>.ix.<store>.ck.id`` → ``IndexCheckpoint`` ``{"q", "t"}`` of the event-id index.

Records are written compact (docs/adr/0025-storage-per-event.md): ``IndexEntry`` is msgpack
``[position]`` or ``[position, version]``; the maps ``{"s", "q", "v"?}`` of earlier versions are
still read. The stream id is not stored: the log message at ``position`` names it in its subject.

Both the stream service and the causation service create the stream, with ``index_stream_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from esdb_gater.shared.core.settings import StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import create_stream
from esdb_gater.shared.log.port import LogPort
from esdb_gater.shared.log.stores import STORE_METADATA

__all__ = ["IndexCheckpoint", "IndexEntry", "create_index_stream", "index_stream_config", "parse_ref", "ref_subject"]


def index_stream_config(subjects: Subjects, store: str, cfg: StoreConfig) -> dict[str, Any]:
    """The index stream's JetStream config, with the store's replicas and storage."""
    return {
        "name": subjects.index_stream(store),
        "description": f"esdb-gater indexes of store {store}",
        "subjects": [f"{subjects.index_root(store)}.>"],
        "storage": cfg.storage,
        "num_replicas": cfg.replicas,
        "max_msgs_per_subject": 1,
        "discard": "old",
        "allow_direct": True,
        "metadata": {STORE_METADATA: store},
    }


async def create_index_stream(log: LogPort, subjects: Subjects, store: str, cfg: StoreConfig) -> None:
    """Create the store's index stream; one that exists already is kept (idempotent)."""
    await create_stream(log, index_stream_config(subjects, store, cfg))


def _uint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a position or version: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Where an indexed event is: the position of its append, its version (None when the entry
    names the append only), and its stream (only in records of earlier versions: None in compact
    ones, whose reader takes it from the log message's subject)."""

    stream_id: str | None
    position: int
    version: int | None = None

    def encode(self) -> bytes:
        """msgpack ``[position]``, or ``[position, version]`` when the version is known. The stream
        id is left out: the log message at ``position`` names it."""
        row = [self.position] if self.version is None else [self.position, self.version]
        return msgpack.packb(row)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> IndexEntry:
        """A compact record or one of an earlier version (``{"s", "q", "v"?}``). Raises
        (``ValueError``, ``KeyError``, ``TypeError``) on a value that is not an entry."""
        row = msgpack.unpackb(data, raw=False)
        if isinstance(row, list):
            if not 1 <= len(row) <= 2:
                raise ValueError("an index entry has one or two numbers")
            return cls(None, _uint(row[0]), _uint(row[1]) if len(row) == 2 else None)
        if not isinstance(row, dict):
            raise TypeError("not an index entry")
        v = row.get("v")
        return cls(str(row["s"]), int(row["q"]), None if v is None else int(v))


def ref_subject(wildcard: str, position: int) -> str:
    """A causation or correlation record: ``wildcard`` is ``Subjects.index_cause(store, id)`` or
    ``index_corr`` (ending in ``.*``); the record names the append at ``position`` (its value is empty)."""
    return f"{wildcard[:-1]}{position}"


def parse_ref(wildcard: str, subject: str) -> IndexEntry | None:
    """The append a causation/correlation record under ``wildcard`` names (version None: every
    event of it that carries the id); None for a subject that is not one."""
    base = wildcard[:-1]
    if not subject.startswith(base):
        return None
    position = subject[len(base) :]
    if not (position.isascii() and position.isdigit()):
        return None
    return IndexEntry(None, int(position))


@dataclass(frozen=True, slots=True)
class IndexCheckpoint:
    """Every commit at or below log position ``position`` is in the event-id index, and every
    commit after it was written after unix time ``since_ns`` (ADR 0017)."""

    position: int = 0
    since_ns: int = 0

    def encode(self) -> bytes:
        """msgpack ``{"q": position, "t": since_ns}``."""
        return msgpack.packb({"q": self.position, "t": self.since_ns})  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> IndexCheckpoint:
        """Raises on a value that is not a checkpoint; ``t`` defaults to 0."""
        row = msgpack.unpackb(data, raw=False)
        return cls(int(row["q"]), int(row.get("t", 0)))
