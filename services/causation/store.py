"""The causation indexes on JetStream (docs/adr/0012-causation-index.md).

Each store's index stream ``<prefix>-ix-<store>`` (one message per subject: the last value wins)
holds, for every event of the log (records: shared/log/index.py, sizes: docs/adr/0025-storage-per-event.md):

* ``<prefix>.ix.<store>.id.<token(event_id)>`` → msgpack ``[position]`` (the stream service writes
  the same subject and value for idempotent appends);
* ``<prefix>.ix.<store>.cause.<token(causation_id)>.<position>`` → empty, for each append holding
  events whose ``metadata.causation_id`` is that id;
* ``<prefix>.ix.<store>.corr.<token(correlation_id)>.<position>`` → empty, the same for
  ``metadata.correlation_id``.

Stores indexed by earlier versions hold ``{"s", "q", "v"}`` maps and one ``….cause.<cid>.<token(event_id)>``
subject per event; every lookup reads both (a non-empty value is an entry of the earlier kind).

An id is found with one Direct Get ``last_by_subj``; the effects or correlated events of an id
with batched Direct Gets ``next_by_subj`` on the wildcard ``….cause.<token>.*``. Every lookup then
reads the appends from the log by position (one Direct Get per append) and keeps the events that
carry the id. No query ever reads a stream from its start.

The stream's config and its records (``IndexEntry``) are owned by shared/log/index.py.

Writes come from the indexers (indexer.py): every causation instance pulls from the store's
durable consumer ``causation-ix`` on the log (explicit acks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Final

from nats.aio.client import Client

from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import decode_commit
from esdb_gater.shared.log.index import IndexEntry, create_index_stream, parse_ref, ref_subject
from esdb_gater.shared.log.jetstream import (
    ERR_STREAM_NOT_FOUND,
    JS_BATCH_LIMIT,
    JetStreamApiError,
    Log,
    StoredMsg,
    consistent_get,
    consumer_info,
    create_consumer,
)
from esdb_gater.shared.log.port import MsgGet
from esdb_gater.shared.log.quotas import IdleMap
from esdb_gater.shared.log.stores import StoreConfigs, last_position, list_stores

__all__ = ["CONSUMER", "CausationStore", "IndexEntry", "caused_by", "correlated_with", "index_entries"]

CONSUMER: Final = "causation-ix"
MAX_ID_BYTES: Final = 1024  # longer ids are not indexed (requests accept up to 256)
PARALLEL_GETS: Final = 64


class CausationStore:
    def __init__(self, nc: Client, log: Log, subjects: Subjects, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.log = log
        self.subjects = subjects
        self.settings = settings
        # per-store state, dropped when idle (ADR 0016)
        self.configs = StoreConfigs(log, subjects, settings.quotas.idle_evict_s)
        self._ready: IdleMap[str, bool] = IdleMap(settings.quotas.idle_evict_s)

    # --- stores -------------------------------------------------------------------------------
    async def stores(self) -> list[str]:
        """Every store: the log streams ``<prefix>-log-<store>``."""
        return await list_stores(self.log, self.subjects)

    async def written(self, store: str) -> bool:
        """Whether the store's log ever took an append: a store never written gets no index
        consumer (ADR 0016)."""
        try:
            return await self.last_seq(store) > 0
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return False
            raise

    async def replicas(self, store: str) -> int:
        """The replicas of the store's log; ``store_not_found`` when there is none."""
        return (await self.configs.get(store)).replicas

    async def ensure(self, store: str) -> None:
        """The store's index stream and the indexer's consumer exist (idempotent)."""
        if store in self._ready:
            return
        await create_index_stream(self.log, self.subjects, store, await self.configs.get(store))
        log_stream = self.subjects.log_stream(store)
        cfg = {
            "durable_name": CONSUMER,
            "description": "esdb-gater causation indexer",
            "filter_subject": self.subjects.log_all(store),
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": 30 * 1_000_000_000,
            "max_deliver": -1,
            "max_ack_pending": 20_000,
            "replay_policy": "instant",
        }
        await create_consumer(self.log, log_stream, CONSUMER, cfg)
        self._ready.add(store)

    def forget(self, store: str) -> None:
        self._ready.discard(store)
        self.configs.forget(store)

    # --- indexing -------------------------------------------------------------------------------
    def entries_of(self, store: str, sm: StoredMsg, stream_id: str) -> list[tuple[str, bytes]]:
        """The index messages of one commit: (subject, value)."""
        return index_entries(self.subjects, store, sm, stream_id)

    async def write(self, entries: list[tuple[str, bytes]]) -> None:
        """Publish index messages, many in flight at once, each acknowledged (no headers: an empty
        header block would be stored with every message)."""
        for i in range(0, len(entries), 512):
            chunk = entries[i : i + 512]
            await asyncio.gather(*(self.log.publish(subject, value, {}) for subject, value in chunk))

    async def consumer_state(self, store: str) -> dict[str, Any] | None:
        ci = await consumer_info(self.log, self.subjects.log_stream(store), CONSUMER)
        if ci is None:
            self.forget(store)
        return ci

    async def last_seq(self, store: str) -> int:
        return await last_position(self.log, self.subjects, store)

    async def wait_indexed(self, store: str, within: float) -> None:
        """Return once every append made before the call is indexed; ``unavailable`` (retryable)
        when the indexer is further behind than ``within`` seconds allow. A store never written
        has nothing to index: no consumer is made for it."""
        await self.configs.get(store)  # store_not_found
        if store not in self._ready and await self.last_seq(store) == 0:
            return
        await self.ensure(store)
        ci = await self.consumer_state(store)
        if ci is not None and _clean(ci):
            return
        target = await self.last_seq(store)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if ci is None:
                await self.ensure(store)
            elif _clean(ci) or int(ci.get("ack_floor", {}).get("stream_seq", 0)) >= target:
                return
            if loop.time() >= deadline:
                pending = int(ci.get("num_pending", 0)) if ci else -1
                raise UnavailableError(
                    "the causation index is catching up with the store; try again",
                    details={"store": store, "pending": pending},
                )
            await asyncio.sleep(0.02)
            ci = await self.consumer_state(store)

    # --- lookups ----------------------------------------------------------------------------------
    async def lookup(self, store: str, event_id: str) -> IndexEntry | None:
        req: MsgGet = {"last_by_subj": self.subjects.index_event_id(store, event_id)}
        sm = await consistent_get(self.log, self.subjects.index_stream(store), req, await self.replicas(store))
        if sm is None or not sm.data:
            return None
        return _decoded(sm.data)

    async def scan_index(self, store: str, wildcard: str) -> list[IndexEntry]:
        """Every entry under ``wildcard`` (``….cause.<token>.*`` or ``….corr.<token>.*``): an
        append (``….<position>``, empty value; version None) or, written by earlier versions, one
        event (``….<token(event_id)>`` → ``IndexEntry``); batched Direct Gets, paged by sequence."""
        name = self.subjects.index_stream(store)
        out: list[IndexEntry] = []
        seq = 1
        while True:
            batch, pending = await self.log.direct_batch(
                name, {"seq": seq, "batch": JS_BATCH_LIMIT, "next_by_subj": wildcard, "max_bytes": 4 * 1024 * 1024}
            )
            for sm in batch:
                entry = _decoded(sm.data) if sm.data else parse_ref(wildcard, sm.subject)
                if entry is not None and (entry.version is not None or not sm.data):
                    out.append(entry)
            if not batch or pending <= 0:
                return out
            seq = batch[-1].seq + 1

    async def effects(self, store: str, event_id: str) -> list[IndexEntry]:
        await self.configs.get(store)
        return await self.scan_index(store, self.subjects.index_cause(store, event_id))

    async def correlated(self, store: str, correlation_id: str) -> list[IndexEntry]:
        await self.configs.get(store)
        return await self.scan_index(store, self.subjects.index_corr(store, correlation_id))

    def _stream_of(self, store: str, sm: StoredMsg, stream_id: str | None) -> str | None:
        """The stream of the log message an entry points at: the entry's own (earlier versions),
        which the message must match, or the one its subject names (compact entries)."""
        if stream_id is not None:
            return stream_id if sm.subject == self.subjects.log_subject(store, stream_id) else None
        if not sm.subject.startswith(self.subjects.log_root(store) + ".e."):
            return None
        try:
            return self.subjects.stream_id_of(sm.subject)
        except ValueError:
            return None

    async def events(
        self, store: str, entries: Iterable[IndexEntry], match: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The events the entries point at, read from the log (one Direct Get per append), each
        once: an entry without a version stands for every event of its append. Entries whose
        append is gone (scavenged, stream deleted), and events ``match`` refuses (the entry is not
        theirs), are left out."""
        replicas = await self.replicas(store)
        wanted: dict[int, list[IndexEntry]] = {}
        for e in entries:
            wanted.setdefault(e.position, []).append(e)
        sem = asyncio.Semaphore(PARALLEL_GETS)
        log_stream = self.subjects.log_stream(store)

        async def fetch(seq: int) -> list[dict[str, Any]]:
            async with sem:
                sm = await consistent_get(self.log, log_stream, {"seq": seq}, replicas)
            if sm is None:
                return []
            rows: dict[int, dict[str, Any]] | None = None
            out: dict[int, dict[str, Any]] = {}
            for e in wanted[seq]:
                sid = self._stream_of(store, sm, e.stream_id)
                if sid is None:
                    continue
                if rows is None:
                    rows = {ev["version"]: ev for ev in decode_commit(sm, sid)}
                for ev in rows.values() if e.version is None else filter(None, [rows.get(e.version)]):
                    if match is None or match(ev):
                        out[ev["version"]] = ev
            return list(out.values())

        found = await asyncio.gather(*(fetch(seq) for seq in wanted))
        return [ev for group in found for ev in group]

    async def event(self, store: str, event_id: str) -> dict[str, Any] | None:
        """The event with this id, or None. The entry may come from the indexer (with ``v``) or
        from the stream service (the append whose first event has this id): either way the
        event is looked for by id in the append at ``q``."""
        entry = await self.lookup(store, event_id)
        if entry is None:
            return None
        replicas = await self.replicas(store)
        sm = await consistent_get(self.log, self.subjects.log_stream(store), {"seq": entry.position}, replicas)
        sid = None if sm is None else self._stream_of(store, sm, entry.stream_id)
        if sm is None or sid is None:
            return None  # removed since (scavenged, stream deleted)
        for ev in decode_commit(sm, sid):
            if ev["event_id"] == event_id:
                return ev
        return None


def index_entries(subjects: Subjects, store: str, sm: StoredMsg, stream_id: str) -> list[tuple[str, bytes]]:
    """The index messages of one commit, (subject, value): an ``id`` entry ``[position]`` for every
    event, and one empty ``cause``/``corr`` record for each causation/correlation id its events
    carry (none for link copies, which are not new facts). ADR 0025 gives their sizes."""
    out: list[tuple[str, bytes]] = []
    refs: dict[str, None] = {}  # in order, each once
    derived = stream_id.startswith("$link:")
    id_value = IndexEntry(None, sm.seq).encode()  # the event is looked for by id in the append
    for ev in decode_commit(sm, stream_id):
        eid = ev["event_id"]
        if len(eid.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            continue
        out.append((subjects.index_event_id(store, eid), id_value))
        if derived:
            continue
        meta = ev.get("metadata") or {}
        cause = _id_value(meta.get("causation_id"))
        if cause is not None:
            refs[ref_subject(subjects.index_cause(store, cause), sm.seq)] = None
        corr = _id_value(meta.get("correlation_id"))
        if corr is not None:
            refs[ref_subject(subjects.index_corr(store, corr), sm.seq)] = None
    out.extend((subject, b"") for subject in refs)
    return out


def caused_by(cause: str) -> Callable[[dict[str, Any]], bool]:
    """Whether an event names ``cause`` as its causation id (as indexed)."""
    return lambda ev: _id_value((ev.get("metadata") or {}).get("causation_id")) == cause


def correlated_with(corr: str) -> Callable[[dict[str, Any]], bool]:
    """Whether an event names ``corr`` as its correlation id (as indexed)."""
    return lambda ev: _id_value((ev.get("metadata") or {}).get("correlation_id")) == corr


def _decoded(data: bytes) -> IndexEntry | None:
    """An index value, or None for one that is not an entry (nothing written by us)."""
    try:
        return IndexEntry.decode(data)
    except Exception:  # msgpack raises many unrelated types for bad input
        return None


def _clean(ci: dict[str, Any]) -> bool:
    return int(ci.get("num_pending", 0)) == 0 and int(ci.get("num_ack_pending", 0)) == 0


def _id_value(value: Any) -> str | None:
    """A causation/correlation id as indexed: strings and integers (as text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return None
    return value
