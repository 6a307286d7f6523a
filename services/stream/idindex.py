"""The event-id index, repaired from the log (ADR 0002 §6, docs/adr/0017-linear-patterns-and-index-repair.md).

An append whose events all carry caller ids is the commit in the log (with ``Nats-Msg-Id``)
*and then* an entry in the store's index stream, ``<prefix>.ix.<store>.id.<token(first id)>`` →
msgpack ``[position, version]`` (``IndexEntry``, ADR 0025; older maps are read too; both records and the
index stream's config are owned by shared/log/index.py). A writer that dies between the two
leaves a commit the index does not know, and a resend with the same ids after JetStream's
duplicate window would be stored twice. The index is derivable from the log, so this module
repairs it:

* a **checkpoint** ``<prefix>.ix.<store>.ck.id`` → ``{"q": seq, "t": unix ns}`` (``IndexCheckpoint``) says every commit
  at or below log sequence ``q`` is indexed, and that ``q`` was the log's last commit when the
  repair that wrote it began at time ``t`` (so every later commit is younger than ``t``).
  ``repair`` indexes the log's commits after it (those with ``Nats-Msg-Id``: their ids came from
  the caller), then moves it forward; ``repair(full=True)`` does it from the log's start (the
  ``store.reindex`` admin op);
* a **miss** (no entry, or one for other ids) is confirmed before the append goes ahead:
  ``unindexed`` reads the stream's commits after the checkpoint, oldest first, and stops at the
  first one younger than half the store's duplicate window (younger commits carry a
  ``Nats-Msg-Id`` JetStream still remembers, so a resend of them is de-duplicated by JetStream);
  when the checkpoint's ``t`` is itself that young, no commit can qualify and nothing is read.
  Each miss also schedules a background ``repair`` (every quarter window), so a busy store's
  misses usually cost no read at all.

Entries are written monotonically: a repair never replaces an entry that points at a later
commit. Only this module and ``store.py`` of the stream service write the index's ``id``
subjects (besides the causation indexer, which writes the same values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import H_VERSION, event_ids
from esdb_gater.shared.log.index import IndexCheckpoint, IndexEntry
from esdb_gater.shared.log.jetstream import H_MSG_ID, JS_BATCH_LIMIT, StoredMsg
from esdb_gater.shared.log.kv import last_msgs
from esdb_gater.shared.log.port import LogPort

__all__ = ["EventIdIndex", "RepairResult"]

log = logging.getLogger(__name__)

SCAN_BATCH: Final = 256  # commits per Direct Get when a miss is confirmed
MAX_BYTES: Final = 4 * 1024 * 1024
CHECKPOINT_TTL_S: Final = 2.0  # a checkpoint read is reused this long (a stale one only scans more)
WRITES_IN_FLIGHT: Final = 256


@dataclass(slots=True, frozen=True)
class RepairResult:
    scanned: int  # commits read from the log
    indexed: int  # entries written
    checkpoint: int  # every commit at or below this position is indexed


class EventIdIndex:
    def __init__(self, log: LogPort, subjects: Subjects) -> None:
        self.log = log
        self.subjects = subjects
        self._ck: dict[str, tuple[int, int, float]] = {}  # store -> (q, t ns, monotonic time read)
        self._repairs: dict[str, asyncio.Task[RepairResult]] = {}
        self._last_repair: dict[str, float] = {}

    # --- the checkpoint -----------------------------------------------------------------------
    async def checkpoint(self, store: str, *, fresh: bool = False) -> int:
        """The log position up to which the index is complete (0: none known)."""
        return (await self.checkpoint_at(store, fresh=fresh))[0]

    async def checkpoint_at(self, store: str, *, fresh: bool = False) -> tuple[int, int]:
        """(q, t): the index is complete to log position ``q``, and every commit after ``q`` was
        written after unix time ``t`` ns (0, 0: nothing known)."""
        now = time.monotonic()
        cached = self._ck.get(store)
        if cached is not None and not fresh and now - cached[2] < CHECKPOINT_TTL_S:
            return cached[0], cached[1]
        sm = await self.log.direct_get(
            self.subjects.index_stream(store), {"last_by_subj": self.subjects.index_checkpoint(store)}
        )
        ck = IndexCheckpoint()
        if sm is not None and sm.data:
            with contextlib.suppress(Exception):
                ck = IndexCheckpoint.decode(sm.data)
        self._ck[store] = (ck.position, ck.since_ns, now)
        return ck.position, ck.since_ns

    async def _set_checkpoint(self, store: str, q: int, t_ns: int) -> None:
        await self.log.publish(self.subjects.index_checkpoint(store), IndexCheckpoint(q, t_ns).encode(), {})
        self._ck[store] = (q, t_ns, time.monotonic())

    def forget(self, store: str) -> None:
        self._ck.pop(store, None)
        self._last_repair.pop(store, None)

    # --- a miss -------------------------------------------------------------------------------
    async def unindexed(
        self, store: str, stream_id: str, ids: list[str], after: int, young_after_ns: int
    ) -> StoredMsg | None:
        """The stream's commit after position ``after`` that holds exactly ``ids``, among those
        written before ``young_after_ns`` (server time); None when there is none."""
        name = self.subjects.log_stream(store)
        subject = self.subjects.log_subject(store, stream_id)
        seq = after + 1
        n = 8  # usually the first commit after the checkpoint is already young: ask for few first
        while True:
            batch, pending = await self.log.direct_batch(
                name, {"seq": seq, "batch": n, "next_by_subj": subject, "max_bytes": MAX_BYTES}
            )
            n = min(n * 4, SCAN_BATCH)
            for sm in batch:
                if sm.ts_ns > young_after_ns:
                    return None
                if event_ids(sm) == ids:
                    return sm
            if not batch or pending <= 0:
                return None
            seq = batch[-1].seq + 1

    # --- repair -------------------------------------------------------------------------------
    def schedule_repair(self, store: str, interval_s: float) -> None:
        """Start a background ``repair`` of the store unless one ran in the last ``interval_s``
        (or is running): on first use, and then often enough that a miss scans little."""
        now = time.monotonic()
        if store in self._repairs or now - self._last_repair.get(store, -1e18) < interval_s:
            return
        self._last_repair[store] = now
        task = asyncio.create_task(self._repair(store, full=False))
        self._repairs[store] = task

        def done(t: asyncio.Task[RepairResult]) -> None:
            self._repairs.pop(store, None)
            if not t.cancelled() and (exc := t.exception()) is not None:
                log.warning("repairing the event-id index of store %s failed: %s; the next miss retries", store, exc)
                self._last_repair.pop(store, None)

        task.add_done_callback(done)

    async def repair(self, store: str, *, full: bool = False) -> RepairResult:
        """Index the log's commits after the checkpoint (``full``: from the log's start) and
        move the checkpoint to the last one read."""
        running = self._repairs.get(store)
        if running is not None and not full:
            return await asyncio.shield(running)
        self._last_repair[store] = time.monotonic()
        return await self._repair(store, full=full)

    async def _repair(self, store: str, *, full: bool) -> RepairResult:
        began_ns = time.time_ns()  # every commit the reads below miss is younger than this
        start = await self.checkpoint(store, fresh=True)
        name = self.subjects.log_stream(store)
        everything = self.subjects.log_all(store)
        seq = 1 if full else start + 1
        last = 0
        scanned = indexed = 0
        while True:
            batch, pending = await self.log.direct_batch(
                name, {"seq": seq, "batch": JS_BATCH_LIMIT, "next_by_subj": everything, "max_bytes": 8 * 1024 * 1024}
            )
            if not batch:
                break
            entries: dict[str, tuple[int, bytes]] = {}  # later commits win inside a batch
            for sm in batch:
                scanned += 1
                entry = self._entry(store, sm)
                if entry is not None:
                    entries[entry[0]] = (sm.seq, entry[1])
            indexed += await self._write(store, entries)
            last = batch[-1].seq
            if pending <= 0:
                break
            seq = last + 1
        checkpoint = max(start, last)
        await self._set_checkpoint(store, checkpoint, began_ns)  # also when q stays: t moves on
        log.info(
            "event-id index of store %s: %d commits read, %d entries written, complete to %d",
            store,
            scanned,
            indexed,
            checkpoint,
        )
        return RepairResult(scanned, indexed, checkpoint)

    def _entry(self, store: str, sm: StoredMsg) -> tuple[str, bytes] | None:
        """The index entry of a commit whose ids came from the caller (it has ``Nats-Msg-Id``)."""
        if H_MSG_ID not in sm.headers:
            return None
        ids = event_ids(sm)
        if not ids:
            return None
        try:
            stream_id = self.subjects.stream_id_of(sm.subject)
            version = int(sm.headers[H_VERSION])
        except Exception:
            return None
        return self.subjects.index_event_id(store, ids[0]), IndexEntry(stream_id, sm.seq, version).encode()

    async def _write(self, store: str, entries: dict[str, tuple[int, bytes]]) -> int:
        """Publish the entries that are missing or point at an earlier commit."""
        if not entries:
            return 0
        known: dict[str, int] = {}
        for sm in await last_msgs(self.log, self.subjects.index_stream(store), list(entries)):
            with contextlib.suppress(Exception):
                known[sm.subject] = IndexEntry.decode(sm.data).position
        todo = [(s, body) for s, (q, body) in entries.items() if known.get(s, 0) < q]
        for i in range(0, len(todo), WRITES_IN_FLIGHT):
            await asyncio.gather(*(self.log.publish(s, body, {}) for s, body in todo[i : i + WRITES_IN_FLIGHT]))
        return len(todo)
