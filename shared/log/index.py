"""A store's index stream ``<prefix>-ix-<store>``: its config and its records, owned here.

One message per subject, the last value wins (docs/adr/0002-event-log-layout.md,
docs/adr/0012-causation-index.md, docs/adr/0017-linear-patterns-and-index-repair.md):

* ``<prefix>.ix.<store>.id.<token(event_id)>`` → ``IndexEntry``: the append holding the event.
  The stream service writes it for appends whose events all carry caller ids (``{"s", "q"}``,
  keyed by the first id); its repair and the causation indexer write ``{"s", "q", "v"}``;
* ``….cause.<token(causation_id)>.<token(event_id)>`` and ``….corr.<token(correlation_id)>.<token(event_id)>``
  → the same ``IndexEntry`` (the causation indexer);
* ``<prefix>.ix.<store>.ck.id`` → ``IndexCheckpoint`` ``{"q", "t"}`` of the event-id index.

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

__all__ = ["IndexCheckpoint", "IndexEntry", "create_index_stream", "index_stream_config"]


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


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Where an indexed event is: its stream, the position of its append, and its version (None
    in the stream service's entries, which name the append only)."""

    stream_id: str
    position: int
    version: int | None = None

    def encode(self) -> bytes:
        """msgpack ``{"s": stream_id, "q": position}``, plus ``"v": version`` when known."""
        row: dict[str, Any] = {"s": self.stream_id, "q": self.position}
        if self.version is not None:
            row["v"] = self.version
        return msgpack.packb(row)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> IndexEntry:
        """Raises (``ValueError``, ``KeyError``, ``TypeError``) on a value that is not an entry."""
        row = msgpack.unpackb(data, raw=False)
        v = row.get("v")
        return cls(str(row["s"]), int(row["q"]), None if v is None else int(v))


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
