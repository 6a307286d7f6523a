"""The event log on JetStream: the only module of the stream service that talks to JetStream.

Layout (docs/adr/0002-event-log-layout.md):

* one JetStream stream per store, ``<prefix>-log-<store>``, subjects ``<prefix>.log.<store>.e.<token>``
  with one literal subject per event stream;
* one message per append (a *commit*), carrying all of the append's events as a msgpack list,
  with headers ``Esdb-Version`` (version of its first event) and ``Esdb-Count``. One message
  makes a multi-event append atomic without ADR-50 batches (which stage every batch on disk for
  R1 file streams) and costs one JetStream write whatever the event count;
* optimistic concurrency with ``Nats-Expected-Last-Subject-Sequence`` = the sequence of the
  stream's last commit, so the server rejects any append that raced another;
* version → sequence by interpolation search over Direct Get ``next_by_subj`` probes
  (O(log n) round trips, usually two or three), time → version by Direct Get ``start_time``;
* the commit's JetStream timestamp is the events' ``epoch_us``/``timestamp`` and its sequence
  their ``position``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from esdb_gater.services.stream.idindex import EventIdIndex, RepairResult
from esdb_gater.shared.core.errors import (
    InvalidRequestError,
    StoreNotFoundError,
    StreamNotFoundError,
    UnavailableError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.settings import Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import (
    H_COUNT,
    H_VERSION,
    Commit,
    commit_of,
    corrupt_entry,
    decode_commit,
    encode_events,
    is_commit,
    new_event_id,
)
from esdb_gater.shared.log.index import IndexEntry, create_index_stream
from esdb_gater.shared.log.jetstream import (
    ERR_INFLIGHT_SAME_SUBJECT,
    ERR_INSUFFICIENT_RESOURCES,
    ERR_REPLICAS_NOT_SUPPORTED,
    ERR_STREAM_NAME_IN_USE,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    H_MSG_ID,
    JS_BATCH_LIMIT,
    JetStreamApiError,
    StoredMsg,
    consistent_get,
)
from esdb_gater.shared.log.kv import stream_subjects
from esdb_gater.shared.log.port import LogPort, MsgGet
from esdb_gater.shared.log.quotas import IdleMap, check_quota
from esdb_gater.shared.log.stores import count_auto_created, log_stream_config, store_config_of
from esdb_gater.shared.models.stream import ANY_VERSION, NO_STREAM, STREAM_EXISTS, EventIn
from esdb_gater.shared.runtime.memory import MemoryMonitor

__all__ = ["AppendResult", "Commit", "EventStore", "PreparedCommit", "StoreInfo"]

log = logging.getLogger(__name__)

HEAD_CACHE_SIZE: Final = 100_000
# bytes per wanted event for a read's first page, before any commit size is known (events of ~150 bytes)
FIRST_PAGE_BYTES_PER_EVENT: Final = 256
# read page (commits, bytes) per memory level
READ_PAGES: Final = {
    "normal": (JS_BATCH_LIMIT, 8 * 1024 * 1024),
    "elevated": (200, 2 * 1024 * 1024),
    "critical": (50, 512 * 1024),
}
# JetStream refusals of a store's config that the caller can fix: insufficient resources
# (e.g. replicas > cluster size) and replicas > 1 on a single server
ERR_STORE_REFUSED: Final = (ERR_INSUFFICIENT_RESOURCES, ERR_REPLICAS_NOT_SUPPORTED)
AUTO_CREATE_FULL_TTL_S: Final = 2.0  # how long a used-up auto-create quota is believed without listing again


@dataclass(slots=True, frozen=True)
class AppendResult:
    version: int
    position: int
    count: int


@dataclass(slots=True, frozen=True)
class PreparedCommit:
    """An append's commit message (``EventStore.prepare_commit``): ``headers`` get ``Esdb-Version``
    and the expected subject sequence when it is sent. ``client_ids``: every event id came from
    the caller (the commit has a ``Nats-Msg-Id``); ``index_ids``: the append goes into the
    event-id index (client ids and an ANY / STREAM_EXISTS expectation)."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    ids: list[str]
    client_ids: bool
    index_ids: bool


@dataclass(slots=True, frozen=True)
class StoreInfo:
    name: str
    config: StoreConfig


_MAX_NS: Final = 9_000_000_000 * 1_000_000_000  # ~2255: Go's time.UnixNano overflows past 2262


def _rfc3339(ns: int) -> str:
    sec, frac = divmod(max(0, min(ns, _MAX_NS)), 1_000_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def _matches(expected: int, current: int) -> bool:
    if expected == ANY_VERSION:
        return True
    if expected == NO_STREAM:
        return current == -1
    if expected == STREAM_EXISTS:
        return current >= 0
    return expected == current


class _StreamLock:
    """The per-stream append lock of ``EventStore._stream_lock``: an ``asyncio.Lock`` per stream
    with a user count, dropped by its last user (a plain class: ``asynccontextmanager`` costs a
    generator and two frames per append)."""

    __slots__ = ("key", "lock", "locks")

    def __init__(self, locks: dict[tuple[str, str], tuple[asyncio.Lock, int]], key: tuple[str, str]) -> None:
        self.locks = locks
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.locks.get(self.key, (None, 0))
        self.lock = lock if lock is not None else asyncio.Lock()
        self.locks[self.key] = (self.lock, users + 1)
        try:
            await self.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self.locks[self.key]
        if users <= 1:
            del self.locks[self.key]
        else:
            self.locks[self.key] = (lock, users - 1)


class EventStore:
    """Appends and reads for every store, over one NATS connection."""

    def __init__(
        self, log: LogPort, subjects: Subjects, settings: Settings, memory: MemoryMonitor | None = None
    ) -> None:
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.memory = memory
        # store configs, dropped when idle (ADR 0016): random store names cannot grow it for good
        self._stores: IdleMap[str, StoreInfo] = IdleMap(settings.quotas.idle_evict_s)
        self._heads: OrderedDict[tuple[str, str], Commit] = OrderedDict()
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self.ids = EventIdIndex(log, subjects)  # the event-id index's repair (ADR 0017)
        self._full_until = 0.0  # monotonic time until which the auto-create quota is known to be used up

    # --- stores -----------------------------------------------------------------------------
    def configured(self, store: str) -> StoreConfig:
        """The configuration a new store gets: ``stores.<id>`` if set, else ``default_store``."""
        return self.settings.stores.get(store, self.settings.default_store)

    async def store(self, store: str, *, create: bool = True) -> StoreInfo:
        """The store's config; creates it on first use when ``auto_create_stores`` is set
        (and ``create`` is true: describing a store never creates it)."""
        info = self._stores.get(store)
        if info is not None:
            return info
        name = self.subjects.log_stream(store)
        try:
            si = await self.log.stream_info(name)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            if not (create and self.settings.auto_create_stores):
                raise StoreNotFoundError(f"store {store!r} does not exist", details={"store": store}) from None
            await self._check_auto_create(store)
            info, _ = await self.create_store(store, self.configured(store), auto=True)
            return info
        info = StoreInfo(store, store_config_of(si["config"]))
        await self._create_index(store, info.config)
        self._stores[store] = info
        return info

    async def existing(self, store: str) -> StoreInfo | None:
        """For reads, which never create a store (ADR 0016): the store's config, or None when it
        does not exist and stores are created on first use (the read then answers as for a
        stream that does not exist); ``store_not_found`` when they are not."""
        try:
            return await self.store(store, create=False)
        except StoreNotFoundError:
            if self.settings.auto_create_stores:
                return None
            raise

    async def _check_auto_create(self, store: str) -> None:
        """``quota_exceeded`` when ``quotas.auto_created_stores`` stores made on first use exist
        (counted from the log streams' metadata, so every instance counts the same)."""
        limit = self.settings.quotas.auto_created_stores
        if limit <= 0:
            return
        if time.monotonic() < self._full_until:  # a client cycling new store names: no listing each time
            check_quota("auto_created_stores", limit, limit, store)
        count = await count_auto_created(self.log, self.subjects)
        if count >= limit:
            self._full_until = time.monotonic() + AUTO_CREATE_FULL_TTL_S
        check_quota("auto_created_stores", limit, count, store)

    async def create_store(self, store: str, cfg: StoreConfig, *, auto: bool = False) -> tuple[StoreInfo, bool]:
        """Create the store's JetStream stream; returns (info, created). Idempotent. ``auto``:
        made on first use (marked, and counted against ``quotas.auto_created_stores``)."""
        name = self.subjects.log_stream(store)
        body = log_stream_config(self.subjects, store, cfg, auto=auto)
        created = False
        try:
            si = await self.log.stream_info(name)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            try:
                si = await self.log.add_stream(body)
                created = True
            except JetStreamApiError as exc2:
                if exc2.err_code != ERR_STREAM_NAME_IN_USE:  # not "created meanwhile by another instance"
                    if exc2.js_status < 500 or exc2.err_code in ERR_STORE_REFUSED:
                        raise InvalidRequestError(
                            f"JetStream refused the store: {exc2.description}",
                            details={"field": "store", "reason": exc2.description, "err_code": exc2.err_code},
                        ) from None
                    raise
                si = await self.log.stream_info(name)
        info = StoreInfo(store, store_config_of(si["config"]))
        await self._create_index(store, info.config)
        self._stores[store] = info
        return info, created

    async def _create_index(self, store: str, cfg: StoreConfig) -> None:
        """The store's index stream (shared/log/index.py)."""
        await create_index_stream(self.log, self.subjects, store, cfg)

    async def store_stats(self, store: str) -> tuple[StoreInfo, int, int]:
        info = await self.store(store, create=False)
        si = await self.log.stream_info(self.subjects.log_stream(store))
        state = si.get("state", {})
        return info, int(state.get("messages", 0)), int(state.get("num_subjects", 0))

    def forget_store(self, store: str) -> None:
        self._stores.pop(store, None)

    # --- per-stream serialisation -------------------------------------------------------------
    def _stream_lock(self, key: tuple[str, str]) -> _StreamLock:
        """Appends to one stream from this instance queue here instead of racing at the server
        (other instances still race; the server's expected-sequence check decides)."""
        return _StreamLock(self._locks, key)

    # --- heads ------------------------------------------------------------------------------
    def _remember(self, key: tuple[str, str], commit: Commit | None) -> None:
        if commit is None:
            self._heads.pop(key, None)
            return
        self._heads[key] = commit
        self._heads.move_to_end(key)
        if len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    async def _head_msg(self, store: str, stream_id: str) -> StoredMsg | None:
        info = await self.existing(store)
        if info is None:
            return None
        req: MsgGet = {"last_by_subj": self.subjects.log_subject(store, stream_id)}
        return await consistent_get(self.log, self.subjects.log_stream(store), req, info.config.replicas)

    async def _last_commit_msg(self, store: str, stream_id: str) -> tuple[StoredMsg | None, int]:
        """The stream's last commit, and the sequence of the last message on its subject (0 when
        there is none). They differ when corrupt entries (messages someone else published into
        the log) follow the last commit: reads skip those, and the next append expects the
        subject's real last sequence, so the stream stays readable and appendable (ADR 0013)."""
        sm = await self._head_msg(store, stream_id)
        if sm is None or is_commit(sm):
            return sm, (sm.seq if sm is not None else 0)
        tail = sm.seq
        name = self.subjects.log_stream(store)
        subject = self.subjects.log_subject(store, stream_id)
        for _ in range(32):  # the message before, one at a time
            corrupt_entry(sm, "stream")
            if sm.seq <= 1:
                return None, tail
            msgs, _ = await self.log.direct_batch(name, {"multi_last": [subject], "up_to_seq": sm.seq - 1, "batch": 1})
            if not msgs:
                return None, tail
            sm = msgs[0]
            if is_commit(sm):
                return sm, tail
        last: StoredMsg | None = None  # a long run of corrupt entries: one forward scan
        seq = 1
        while seq < tail:
            batch, _ = await self.log.direct_batch(name, {"seq": seq, "batch": JS_BATCH_LIMIT, "next_by_subj": subject})
            if not batch:
                break
            last = next((m for m in reversed(batch) if m.seq < tail and is_commit(m)), last)
            seq = batch[-1].seq + 1
        return last, tail

    async def head(self, store: str, stream_id: str, *, cached: bool = False) -> Commit | None:
        """The stream's last commit, or None when the stream has no events (a head with
        ``count`` 0 when its subject holds only corrupt entries)."""
        key = (store, stream_id)
        if cached and key in self._heads:
            return self._heads[key]
        sm, tail = await self._last_commit_msg(store, stream_id)
        commit: Commit | None = None
        if sm is not None:
            c = commit_of(sm)
            commit = c if tail == c.seq else Commit(c.seq, c.first, c.count, c.ts_ns, tail)
        elif tail:
            commit = Commit(0, 0, 0, 0, tail)
        self._remember(key, commit)
        return commit

    # --- append -----------------------------------------------------------------------------
    async def append(self, store: str, stream_id: str, expected: int, events: list[EventIn]) -> AppendResult:
        if len(events) > self.settings.max_events_per_append:
            raise InvalidRequestError(
                f"at most {self.settings.max_events_per_append} events per append",
                details={"field": "events", "reason": "too many events", "count": len(events)},
            )
        await self.store(store)
        key = (store, stream_id)
        prepared = self.prepare_commit(store, stream_id, expected, events)
        subject, payload, headers = prepared.subject, prepared.payload, prepared.headers
        client_ids, ids, index_ids = prepared.client_ids, prepared.ids, prepared.index_ids
        if index_ids:
            earlier = await self._indexed_append(store, stream_id, ids)
            if earlier is not None:
                return earlier
        async with self._stream_lock(key):
            head = await self.head(store, stream_id, cached=True)
            from_cache = True
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.request_timeout_s * 0.8
            losses = 0
            while loop.time() < deadline:
                current = head.last if head else -1
                if not _matches(expected, current):
                    if from_cache:  # the cache may be stale: ask the server before saying no
                        head = await self.head(store, stream_id)
                        from_cache = False
                        continue
                    if client_ids and expected >= NO_STREAM and current > expected:
                        # A resend of an append that already happened (its reply was lost)?
                        same = await self._same_append_at(store, stream_id, max(expected + 1, 0), ids)
                        if same is not None:
                            return same
                    raise WrongExpectedVersionError(
                        f"expected version {expected}, stream {stream_id!r} is at {current}",
                        details={"expected": expected, "actual": current, "stream_id": stream_id},
                    )
                first = current + 1
                headers[H_VERSION] = str(first)
                headers[H_EXPECTED_LAST_SUBJECT_SEQ] = str(head.subject_seq if head else 0)
                try:
                    ack = await self.log.publish(subject, payload, headers)
                except JetStreamApiError as exc:
                    if exc.err_code in (ERR_WRONG_LAST_SEQUENCE, ERR_INFLIGHT_SAME_SUBJECT):
                        # Lost a race with another instance. Its next append needs no head
                        # lookup, ours does, so back off with jitter or we could lose every time.
                        losses += 1
                        if losses > 1 or exc.err_code == ERR_INFLIGHT_SAME_SUBJECT:
                            await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**losses)))
                        head = await self.head(store, stream_id)
                        from_cache = False
                        continue
                    raise
                except UnavailableError:
                    self.forget_store(store)
                    await self.store(store)  # raises store_not_found if it was deleted
                    raise
                if ack.duplicate:
                    original = await self.log.direct_get(self.subjects.log_stream(store), {"seq": ack.seq})
                    if original is None or original.subject != subject:
                        # The original was deleted with its stream: this is a new append now.
                        # JetStream would keep answering "duplicate" for the rest of the window.
                        headers[H_MSG_ID] = f"{headers[H_MSG_ID]}.{ack.seq}"
                        head = await self.head(store, stream_id)
                        continue
                    c = commit_of(original)
                    result = AppendResult(c.last, c.seq, c.count)
                else:
                    commit = Commit(ack.seq, first, len(events), 0)
                    self._remember(key, commit)
                    result = AppendResult(commit.last, commit.seq, commit.count)
                if index_ids:
                    await self._index_append(store, stream_id, ids[0], result.position)
                return result
            raise UnavailableError("too much contention on the stream; try again", details={"stream_id": stream_id})

    def prepare_commit(self, store: str, stream_id: str, expected: int, events: list[EventIn]) -> PreparedCommit:
        """The commit message of an append, but for ``Esdb-Version`` and the expected subject
        sequence (``stream.append`` and each append of ``stream.append_multi``)."""
        client_ids = all(ev.event_id for ev in events)
        ids = [ev.event_id or new_event_id() for ev in events]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("event ids must be unique within an append", details={"field": "events"})
        headers = {H_COUNT: str(len(events))}
        if client_ids:
            # Same ids → same message id: JetStream answers a resend inside the duplicate window
            # with the original sequence instead of storing it twice.
            id_key = json.dumps([store, stream_id, ids], ensure_ascii=False)  # unambiguous, unlike a join
            digest = hashlib.sha256(id_key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
            headers[H_MSG_ID] = digest
        # ANY / STREAM_EXISTS appends never conflict, so a late resend (after the duplicate
        # window) is recognised through the event-id index instead.
        index_ids = client_ids and expected in (ANY_VERSION, STREAM_EXISTS)
        subject = self.subjects.log_subject(store, stream_id)
        return PreparedCommit(subject, encode_events(events, ids), headers, ids, client_ids, index_ids)

    # --- idempotency ------------------------------------------------------------------------
    async def _same_append_at(self, store: str, stream_id: str, version: int, ids: list[str]) -> AppendResult | None:
        """The stored append holding ``version``, if it has exactly these event ids."""
        head_sm, _ = await self._last_commit_msg(store, stream_id)
        if head_sm is None:
            return None
        sm = await self._seek(store, stream_id, version, head_sm)
        return self._if_same(sm, stream_id, ids)

    @staticmethod
    def _if_same(sm: StoredMsg, stream_id: str, ids: list[str]) -> AppendResult | None:
        stored = [ev["event_id"] for ev in decode_commit(sm, stream_id, "stream")]
        if stored != ids:
            return None
        c = commit_of(sm)
        return AppendResult(c.last, c.seq, c.count)

    async def _indexed_append(self, store: str, stream_id: str, ids: list[str]) -> AppendResult | None:
        """An earlier append of these event ids, found through the event-id index."""
        entry = await self.log.direct_get(
            self.subjects.index_stream(store), {"last_by_subj": self.subjects.index_event_id(store, ids[0])}
        )
        if entry is not None:
            position = IndexEntry.decode(entry.data).position
            sm = await self.log.direct_get(self.subjects.log_stream(store), {"seq": position})
            # deleted since, or the id was used in another stream: not a resend of that one
            if sm is not None and sm.subject == self.subjects.log_subject(store, stream_id):
                same = self._if_same(sm, stream_id, ids)
                if same is not None:
                    return same
        return await self._unindexed_append(store, stream_id, ids)

    async def _unindexed_append(self, store: str, stream_id: str, ids: list[str]) -> AppendResult | None:
        """An earlier append of these ids that the index misses (its writer died between the log
        and the index, ADR 0017): looked for among the stream's commits after the index's
        checkpoint that JetStream's duplicate window no longer covers; found, it is indexed."""
        cfg = (await self.store(store)).config
        window_ns = int(cfg.duplicate_window_s * 1e9)
        self.ids.schedule_repair(store, interval_s=max(1.0, cfg.duplicate_window_s / 4))
        after, since_ns = await self.ids.checkpoint_at(store)
        young_after_ns = time.time_ns() - window_ns // 2
        if since_ns >= young_after_ns:
            return None  # every commit after the checkpoint is young: JetStream's Nats-Msg-Id covers it
        sm = await self.ids.unindexed(store, stream_id, ids, after, young_after_ns)
        if sm is None:
            return None
        await self._index_append(store, stream_id, ids[0], sm.seq)
        return self._if_same(sm, stream_id, ids)

    async def reindex(self, store: str) -> RepairResult:
        """Rebuild the store's event-id index from its log (the ``store.reindex`` admin op)."""
        await self.store(store, create=False)
        return await self.ids.repair(store, full=True)

    async def _index_append(self, store: str, stream_id: str, first_id: str, seq: int) -> None:
        body = IndexEntry(stream_id, seq).encode()
        subject = self.subjects.index_event_id(store, first_id)
        try:
            await self.log.publish(subject, body, {})
        except UnavailableError:  # a store made before the index existed: add it, then retry
            await self._create_index(store, (await self.store(store)).config)
            await self.log.publish(subject, body, {})

    # --- reads ------------------------------------------------------------------------------
    async def _probe(self, name: str, subject: str, seq: int) -> StoredMsg | None:
        """The first commit of ``subject`` at or after ``seq`` (corrupt entries skipped)."""
        while True:
            sm = await self.log.direct_get(name, {"seq": seq, "next_by_subj": subject})
            if sm is None or is_commit(sm):
                return sm
            corrupt_entry(sm, "stream")
            seq = sm.seq + 1

    async def _seek(self, store: str, stream_id: str, version: int, head: StoredMsg) -> StoredMsg:
        """The commit holding ``version`` (or the first one after it, if it was removed).

        Interpolation search between the first and the last commit, alternating with bisection
        so the worst case stays O(log n) probes; each probe is one Direct Get."""
        name = self.subjects.log_stream(store)
        subject = self.subjects.log_subject(store, stream_id)
        hi = head
        if int(hi.headers[H_VERSION]) <= version:
            return hi
        lo = await self._probe(name, subject, 1)
        if lo is None:
            return hi
        lo_c = commit_of(lo)
        if lo_c.last >= version:
            return lo
        hi_lim = hi.seq  # no commit of this stream in [hi_lim, hi.seq)
        step = 0
        while hi_lim - lo.seq > 1:
            lo_last = commit_of(lo).last
            hi_first = int(hi.headers[H_VERSION])
            span = hi_lim - lo.seq - 1
            if step % 2 == 0 and hi_first > lo_last:
                frac = (version - lo_last) / (hi_first - lo_last)
                guess = lo.seq + 1 + int(frac * span)
            else:
                guess = lo.seq + 1 + span // 2
            guess = max(lo.seq + 1, min(guess, hi_lim - 1))
            step += 1
            c = await self._probe(name, subject, guess)
            if c is None or c.seq >= hi.seq:
                hi_lim = guess
                continue
            cc = commit_of(c)
            if cc.first <= version <= cc.last:
                return c
            if cc.last < version:
                lo = c
            else:
                hi, hi_lim = c, guess
        return hi

    async def _batch(
        self, store: str, stream_id: str, from_seq: int, n: int, max_bytes: int | None = None
    ) -> tuple[list[StoredMsg], int]:
        """Up to ``n`` commits of the stream from ``from_seq`` on (stopping after ``max_bytes``,
        when given), and how many more there are. Under memory pressure the pages get smaller (the
        read still completes, in more round trips), so one large read cannot push an elevated
        process over the edge (SPEC.md §10)."""
        limit, page_bytes = READ_PAGES[self.memory.level() if self.memory is not None else "normal"]
        return await self.log.direct_batch(
            self.subjects.log_stream(store),
            {
                "seq": from_seq,
                "batch": max(1, min(n, limit)),
                "next_by_subj": self.subjects.log_subject(store, stream_id),
                "max_bytes": page_bytes if max_bytes is None else max(1, min(max_bytes, page_bytes)),
            },
        )

    async def read_versions(
        self, store: str, stream_id: str, lo: int, hi: int | None, limit: int, head_sm: StoredMsg | None = None
    ) -> list[dict[str, Any]]:
        """Events with lo <= version <= hi (hi None = to the end), ascending, at most ``limit``.
        Raises stream_not_found when the stream has no events. ``head_sm``: the stream's last
        commit, when the caller has just read it."""
        info = await self.existing(store)
        if info is None:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})
        if lo <= 0 and info.config.replicas == 1 and head_sm is None:
            # From the start on a single replica: one batched Direct Get, no head lookup (the
            # only replica is the leader, so the batch sees every acknowledged append).
            top = hi if hi is not None else (1 << 62)
            wanted = min(limit, top + 1)
            if wanted <= 0:
                await self._require(store, stream_id)
                return []
            # The commit sizes are not known yet: bound the first page by bytes too, so a stream
            # written in large appends answers a commit or two, not ``wanted`` commits.
            batch, pending = await self._batch(store, stream_id, 1, wanted, wanted * FIRST_PAGE_BYTES_PER_EVENT)
            if not batch:
                await self._require(store, stream_id)
                return []
            events = await self._collect(store, stream_id, batch, pending, 0, top, wanted, None)
            if not events:  # only corrupt entries, or every wanted version scavenged
                await self._require(store, stream_id)
            return events
        if head_sm is None:
            head_sm, _ = await self._last_commit_msg(store, stream_id)
        if head_sm is None:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})
        head = commit_of(head_sm)
        self._remember((store, stream_id), head)
        top = head.last if hi is None else min(hi, head.last)
        if limit <= 0 or lo > top:
            return []
        wanted = min(limit, top - lo + 1)
        start = await self._seek(store, stream_id, lo, head_sm)
        return await self._collect(store, stream_id, [start], 1, lo, top, wanted, head.seq)

    async def _require(self, store: str, stream_id: str) -> None:
        head = await self.head(store, stream_id)
        if head is None or head.last < 0:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})

    async def _collect(
        self,
        store: str,
        stream_id: str,
        batch: list[StoredMsg],
        pending: int,
        lo: int,
        top: int,
        wanted: int,
        head_seq: int | None,
    ) -> list[dict[str, Any]]:
        """Decode commits from ``batch`` on, fetching more until ``wanted`` events in [lo, top]
        are collected or the stream ends (at ``head_seq`` when known, else when none are pending).

        Each further page asks for as many commits as the events still wanted need at the commit
        sizes seen so far, so a read costs what it returns whatever the append sizes; a page that
        falls short makes the next one at least twice as large (few round trips when sizes vary)."""
        out: list[dict[str, Any]] = []
        empty_rounds = 0
        seen_commits = seen_events = 0
        asked = 0
        while True:
            for sm in batch:
                events = decode_commit(sm, stream_id, "stream")
                if events:
                    seen_commits += 1
                    seen_events += len(events)
                for ev in events:
                    if lo <= ev["version"] <= top:
                        out.append(ev)
            last_seq = batch[-1].seq
            if len(out) >= wanted or (head_seq is not None and last_seq >= head_seq):
                break
            if head_seq is None and pending <= 0:
                break
            missing = wanted - len(out)
            n = missing if seen_events <= 0 else -(-missing * seen_commits // seen_events)
            n = min(missing, max(n, 2 * asked if asked else 1))
            asked = n
            while True:
                batch, pending = await self._batch(store, stream_id, last_seq + 1, n)
                if batch or head_seq is None:
                    break
                # A follower answered before it caught up with the leader: wait for it.
                empty_rounds += 1
                if empty_rounds > 50:
                    raise UnavailableError("the stream's replicas are behind; try again")
                await asyncio.sleep(0.01)
            if not batch:
                break
        return out[:wanted]

    async def read(self, store: str, stream_id: str, start: int, count: int, direction: str) -> list[dict[str, Any]]:
        if direction == "forward":
            if start < 0:
                raise InvalidRequestError(
                    "start_version must be >= 0 when reading forward",
                    details={"field": "start_version", "reason": "negative"},
                )
            return await self.read_versions(store, stream_id, start, start + count - 1, count)
        head_sm, _ = await self._last_commit_msg(store, stream_id)
        if head_sm is None:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})
        if start == -1:
            start = commit_of(head_sm).last
        bottom = max(0, start - count + 1)
        events = await self.read_versions(store, stream_id, bottom, start, count, head_sm)
        events.reverse()
        return events

    async def version(self, store: str, stream_id: str) -> int:
        head = await self.head(store, stream_id)
        return head.last if head else -1

    async def delete(self, store: str, stream_id: str) -> None:
        if await self.existing(store) is None:
            return  # nothing to delete, and deleting makes no store
        key = (store, stream_id)
        async with self._stream_lock(key):
            await self.log.purge(self.subjects.log_stream(store), subject=self.subjects.log_subject(store, stream_id))
            self._remember(key, None)

    async def list_streams(self, store: str, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Stream ids sorted by their UTF-8 bytes, a page after ``cursor``."""
        if await self.existing(store) is None:
            return [], None
        listing = await stream_subjects(self.log, self.subjects.log_stream(store), self.subjects.log_all(store))
        ids: list[str] = []
        for s in listing.subjects if listing is not None else []:
            try:
                ids.append(self.subjects.stream_id_of(s))
            except ValueError:  # not a subject we made: a message someone else published
                log.warning("corrupt_entry: %s is not a stream subject; stream.list skips it", s[:200])
        ids.sort(key=lambda s: s.encode("utf-8"))
        if cursor is not None:
            c = cursor.encode("utf-8")
            ids = [s for s in ids if s.encode("utf-8") > c]
        page = ids[:limit]
        nxt = page[-1] if len(ids) > limit else None
        return page, nxt

    # --- time -------------------------------------------------------------------------------
    async def _first_commit_at_or_after(self, store: str, stream_id: str, ns: int) -> StoredMsg | None:
        name = self.subjects.log_stream(store)
        subject = self.subjects.log_subject(store, stream_id)
        sm = await self.log.direct_get(name, {"start_time": _rfc3339(ns), "next_by_subj": subject})
        if sm is None or is_commit(sm):
            return sm
        corrupt_entry(sm, "stream")
        return await self._probe(name, subject, sm.seq + 1)

    async def version_at(self, store: str, stream_id: str, epoch_us: int) -> int:
        """The last version whose epoch_us <= the given one; -1 when none is that old."""
        head = await self.head(store, stream_id)
        if head is None:
            return -1
        if (epoch_us + 1) * 1000 > head.ts_ns:
            return head.last
        after = await self._first_commit_at_or_after(store, stream_id, (epoch_us + 1) * 1000)
        if after is None:
            return head.last
        return commit_of(after).first - 1

    async def read_time_range(
        self, store: str, stream_id: str, from_us: int | None, to_us: int, direction: str, limit: int
    ) -> list[dict[str, Any]]:
        head = await self.head(store, stream_id)
        if head is None or head.last < 0:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})
        hi = await self.version_at(store, stream_id, to_us)
        lo = 0
        if from_us is not None:
            first = await self._first_commit_at_or_after(store, stream_id, from_us * 1000)
            if first is None:
                return []
            lo = commit_of(first).first
        if hi < lo or limit == 0:
            return []
        if direction == "forward":
            return await self.read_versions(store, stream_id, lo, hi, limit)
        events = await self.read_versions(store, stream_id, max(lo, hi - limit + 1), hi, limit)
        events.reverse()
        return events
