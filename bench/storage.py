"""The ``storage`` row (issue 11): bytes stored per event, log plus indexes, against the event's JSON.

Each variant gets its own store, so its log stream ``esdb-log-<store>`` and index stream
``esdb-ix-<store>`` hold only its events. ``n`` typical events (an ``OrderPlaced`` of about 140
bytes of JSON) are appended through the gateway, 32 appends in flight over 40 streams; once the
causation index has caught up (a ``causation.correlated`` query waits for it), the row reads
``STREAM.INFO`` of both streams. JetStream's ``bytes`` counts, per message, its subject, headers and
body plus ~30 bytes of framing; that is the number the target (≤ 2x the event's JSON) is checked
on. ``du`` of the streams' folders (file storage: blocks, per-subject index files, deleted
messages not yet compacted) is given beside it when the server's folder is known.

Variants: plain events and events with ``causation_id`` + ``correlation_id``, in appends of 1
and of 10; and plain events with caller ``event_id``s (expected version ANY: the idempotent
append, which also writes the stream service's event-id entry). An event with ids names the
command that caused it (one per 10 events: an append of 10 is one command's events) and its
workflow (one per 100 events). The store names are 15 characters; they are in every subject.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nats.aio.client import Client

from esdb_gater.bench.causation import _call
from esdb_gater.bench.report import Check, Row

__all__ = ["VARIANTS", "Variant", "storage_per_event", "typical_event"]

STREAMS: Final = 40
IN_FLIGHT: Final = 32


@dataclass(frozen=True, slots=True)
class Variant:
    label: str
    per_append: int
    ids: bool  # causation_id + correlation_id in the metadata
    caller_ids: bool  # the caller names each event_id (idempotent append)
    checked: bool  # the <= 2x target is checked on this one


VARIANTS: Final = (
    Variant("plain event, appends of 1", 1, False, False, True),
    Variant("plain event, appends of 10", 10, False, False, False),
    Variant("causation + correlation ids, appends of 1", 1, True, False, True),
    Variant("causation + correlation ids, appends of 10", 10, True, False, False),
    Variant("caller event_id (idempotent ANY append), appends of 1", 1, False, True, False),
)


def typical_event(i: int, *, ids: bool = False, caller_id: bool = False) -> dict[str, Any]:
    """An event as an application would append it: ~140 bytes of JSON without ids."""
    meta: dict[str, Any] = {"user": f"u-{i % 97}"}
    if ids:
        meta["correlation_id"] = str(uuid.UUID(int=(i // 100 + 1) << 64))  # a workflow of 100 events
        meta["causation_id"] = str(uuid.UUID(int=i // 10 + 1))  # the command behind 10 events
    ev: dict[str, Any] = {
        "event_type": "OrderPlaced",
        "data": {"order_id": f"ord-{i:07d}", "sku": "SKU-1234", "qty": 2, "price_cents": 4999, "currency": "EUR"},
        "metadata": meta,
    }
    if caller_id:
        ev = {"event_id": str(uuid.uuid4()), **ev}
    return ev


def json_size(ev: dict[str, Any]) -> int:
    return len(json.dumps(ev, separators=(",", ":")).encode())


def _du(folder: Path) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of every file under ``folder``."""
    alloc = apparent = 0
    for f in folder.rglob("*"):
        if f.is_file():
            st = f.stat()
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def _stream_dir(roots: list[Path], name: str) -> Path | None:
    for root in roots:
        for d in root.rglob(f"streams/{name}"):
            if d.is_dir():
                return d
    return None


async def _write(nc: Client, store: str, v: Variant, n: int) -> tuple[int, dict[str, Any]]:
    """Append ``n`` events; (total JSON bytes of the events, one event as sent)."""
    events = [typical_event(i, ids=v.ids, caller_id=v.caller_ids) for i in range(n)]
    appends = [events[i : i + v.per_append] for i in range(0, n, v.per_append)]
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(k: int, evs: list[dict[str, Any]]) -> None:
        async with sem:
            await _call(nc, f"esdb.api.{store}.stream.append", {"stream_id": f"order-{k % STREAMS}", "events": evs})

    await asyncio.gather(*(one(k, evs) for k, evs in enumerate(appends)))
    return sum(json_size(e) for e in events), events[0]


async def _stream_bytes(nc: Client, name: str) -> tuple[int, int]:
    info = await nc.jetstream().stream_info(name)
    return int(info.state.bytes or 0), int(info.state.messages or 0)


async def storage_per_event(
    nc: Client, n: int, store_dirs: list[Path] | None = None, store_config: dict[str, Any] | None = None
) -> tuple[list[Row], list[Check], dict[str, Any]]:
    """The rows, checks and numbers (``meta``) of the storage row. ``store_config``: the
    ``store.create`` body of each variant's store (storage, replicas); ``store_dirs``: the
    servers' data folders, for ``du`` (bytes of one replica)."""
    rows: list[Row] = []
    checks: list[Check] = []
    meta: dict[str, Any] = {}
    tag = uuid.uuid4().hex[:4]
    for k, v in enumerate(VARIANTS):
        store = f"benchstor{k}x{tag}"
        await _call(nc, f"esdb.api.{store}.store.create", dict(store_config or {}))
        json_bytes, sample = await _write(nc, store, v, n)
        # the causation query answers once every append before it is indexed
        await _call(nc, f"esdb.api.{store}.causation.correlated", {"correlation_id": "none"}, within=300.0)
        await asyncio.sleep(1.0)  # let the file store flush its blocks before du
        log_b, log_m = await _stream_bytes(nc, f"esdb-log-{store}")
        ix_b, ix_m = await _stream_bytes(nc, f"esdb-ix-{store}")
        per_event = (log_b + ix_b) / n
        per_json = json_bytes / n
        ratio = per_event / per_json
        disk = ""
        du_total = None
        if store_dirs:
            dirs = [_stream_dir(store_dirs, f"esdb-{kind}-{store}") for kind in ("log", "ix")]
            if all(d is not None for d in dirs):
                du_total = sum(_du(d)[0] for d in dirs if d is not None)
                disk = f"; du of both stream folders {du_total / n:.0f} B/event"
        check = Check(f"storage per event ÷ its JSON, {v.label}", ratio, "<=", 2.0)
        if v.checked:
            checks.append(check)
        rows.append(
            Row(
                "storage per event (log + indexes, STREAM.INFO bytes)",
                v.label,
                None,
                f"{ratio:.2f}",
                check.target_cell() if v.checked else "",
                f"JSON {per_json:.0f} B/event; log {log_b / n:.0f} B/event ({log_m:,} msgs), "
                f"index {ix_b / n:.0f} B/event ({ix_m:,} msgs){disk}",
                value=f"{per_event:.0f} B/event",
            )
        )
        meta[v.label] = {
            "events": n,
            "json_bytes_per_event": round(per_json, 1),
            "log_bytes": log_b,
            "log_msgs": log_m,
            "index_bytes": ix_b,
            "index_msgs": ix_m,
            "bytes_per_event": round(per_event, 1),
            "ratio": round(ratio, 3),
            "du_bytes": du_total,
            "sample_event": sample,
        }
    return rows, checks, meta
