"""Forwarding: one driver per running link, in the instance that holds the link's lease.

Exactly once per source event (docs/adr/0010-links.md):

* the durable consumer delivers the source's appends in store order, once or more;
* every derived event's id is derived from the link's name and the source event's id, and its
  metadata carries ``source_position`` (the source append's position) and ``source_version``;
* the driver appends with ``expected_version`` = the derived stream's version as it knows it,
  so a second writer (a lease that moved, a lost reply) can never add a copy: the stream
  service either refuses (``wrong_expected_version``: the driver re-reads the derived stream's
  tail, whose last event says how far it got, and drops what is already there) or recognises
  the very same append (same ids at that version) and returns the original result;
* the checkpoint is the link's own KV entry (``ckpt.<store>.<key>``, written after every
  append, docs/adr/0016-reserved-streams-and-quotas.md), never the metadata of events in the
  derived stream: what a stream holds is not proof of who wrote it. Events found in the derived
  stream after the checkpoint's version (an append whose checkpoint write a crash cut off, or a
  second holder's) are recognised by their ids and not copied again; they never move the
  checkpoint. The consumer's ack floor and the ``stat`` counters only save work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgpack
from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.services.link.rules import compile_filter, compile_transform, pattern_regex, uses_matches
from esdb_gater.services.link.store import Checkpoint, Definition, LinkStore, Stats
from esdb_gater.shared.core.errors import (
    GatewayTimeoutError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnavailableError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.patterns import run_matching
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.core.telemetry import emit
from esdb_gater.shared.log.eventlog import decode_commit
from esdb_gater.shared.log.jetstream import StoredMsg
from esdb_gater.shared.log.lease import Lease, LeaseSupervisor
from esdb_gater.shared.models.link import DERIVED_PREFIX

__all__ = ["BATCH_BY_LEVEL", "Driver", "MemoryLevel", "Supervisor", "derived_event_id"]

log = logging.getLogger(__name__)

# memory level -> (appends fetched per batch, pause between backfill batches in seconds)
BATCH_BY_LEVEL: Final = {"normal": (256, 0.0), "elevated": (32, 0.05), "critical": (8, 0.25)}
MAX_EVENTS_PER_APPEND: Final = 500
MAX_BYTES_PER_APPEND: Final = 1024 * 1024
# derived events read back after the checkpoint's version (a crash window holds one append)
MAX_RECHECK: Final = 2 * MAX_EVENTS_PER_APPEND
_ID_NAMESPACE: Final = uuid.UUID("6c1e5e0a-6f1d-4c55-9a55-4e2d1a9b7c10")

MemoryLevel = Callable[[], str]


def derived_event_id(link_name: str, source_event_id: str) -> str:
    """The id of a source event's copy in ``$link:<name>``: the same on every run (UUIDv5)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{link_name}\x00{source_event_id}"))


class LinkFailedError(Exception):
    """The link cannot go on (the stream service refuses what it would write)."""


@dataclass(slots=True)
class _Out:
    seq: int
    source: dict[str, Any]
    event: dict[str, Any]

    @property
    def mark(self) -> tuple[int, int]:
        return (self.seq, int(self.source["version"]))

    @property
    def key(self) -> tuple[str, int, int]:
        return (str(self.event["event_id"]), self.seq, int(self.source["version"]))


class Driver:
    """Forwards one link while this instance holds its lease."""

    def __init__(
        self,
        nc: Client,
        store: LinkStore,
        subjects: Subjects,
        d: Definition,
        memory_level: MemoryLevel | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.subjects = subjects
        self.d = d
        self.memory_level = memory_level or (lambda: "normal")
        self.match = compile_filter(d.filter)
        self.match_off_loop = uses_matches(d.filter)  # client regexes (RE2) run on a worker thread
        self.transform = compile_transform(d.transform)
        self.in_source = self._source_predicate(d)
        self.version = -1
        self.checkpoint: tuple[int, int] = (0, -1)
        # copies already in the derived stream past the checkpoint: (event id, source position, version)
        self.written: set[tuple[str, int, int]] = set()
        self._ck_rev: int | None = None  # KV revision of this driver's last checkpoint write
        self.stats = Stats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False

    @staticmethod
    def _source_predicate(d: Definition) -> Callable[[str], bool]:
        src = d.source
        if src["type"] == "stream":
            return lambda sid: True  # the consumer's subject filter did it
        if src["type"] == "stream_pattern":
            rx = pattern_regex(src["pattern"])
            return lambda sid: not sid.startswith(DERIVED_PREFIX) and rx.fullmatch(sid) is not None
        return lambda sid: not sid.startswith(DERIVED_PREFIX)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"link-{self.d.key}")

    async def stop(self, grace_s: float = 15.0) -> None:
        """Stop after the batch in progress (its appends, counters and ack) is done, so nothing
        is written for the link once this returns; cancel if it takes longer than ``grace_s``."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if not self._busy:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_s)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- the loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._drive()
                return
            except asyncio.CancelledError:
                raise
            except LinkFailedError as exc:
                log.error("link %s (%s) stopped with an error: %s", self.d.name, self.d.store, exc)
                with contextlib.suppress(Exception):
                    await self.store.set_status(self.d.store, self.d.name, "error", str(exc))
                meta = {"store_id": self.d.store, "link_name": self.d.name}
                emit(("link", "error"), {"system_time": time.time_ns()}, meta)
                return
            except Exception:
                log.warning("link %s (%s): forwarding interrupted, resuming", self.d.name, self.d.store, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _resync(self) -> None:
        """Where the link is: its own checkpoint (KV) and the derived stream's version. Events
        the derived stream holds past the checkpoint's version are remembered by id, so they are
        not copied twice; nothing read from the derived stream moves the checkpoint."""
        ck = await self.store.checkpoint(self.d)
        head = await self.store.derived_version(self.d)
        self.version = head
        self.written = set()
        self._ck_rev = None
        if ck is None:
            self.checkpoint = await self._legacy_checkpoint(head)
            return
        self.checkpoint = (ck.pos, ck.ver)
        if head > ck.link_version:
            first = max(ck.link_version + 1, head - MAX_RECHECK + 1)
            for ev in await self.store.derived_events(self.d, first, head - first + 1):
                meta = ev.get("metadata") or {}
                try:
                    self.written.add((str(ev["event_id"]), int(meta["source_position"]), int(meta["source_version"])))
                except (KeyError, TypeError, ValueError):
                    continue  # not a copy made by a link

    async def _legacy_checkpoint(self, head: int) -> tuple[int, int]:
        """No checkpoint in KV: a new link, or one made before checkpoints were kept there (or
        created again over a kept stream by such a version). The counters' position if there is
        one; else the derived stream's last event, but only when it is this link's copy of an
        event the source really holds at that position and version (its id is derived from
        them), so forged metadata naming a position the source does not have is ignored."""
        if head < 0:
            return (0, -1)
        if self.stats.pos > 0:
            return (self.stats.pos, 1 << 62)
        for ev in await self.store.derived_events(self.d, head, 1):
            meta = ev.get("metadata") or {}
            try:
                pos, ver = int(meta["source_position"]), int(meta["source_version"])
                src_id = str(meta["source_event_id"])
            except (KeyError, TypeError, ValueError):
                return (0, -1)
            if ev.get("event_id") != derived_event_id(self.d.name, src_id):
                return (0, -1)
            src = await self.store.source_event(self.d.store, pos, ver)
            if src is None or src.get("event_id") != src_id:
                return (0, -1)
            return (pos, ver)
        return (0, -1)

    async def _drive(self) -> None:
        """Forward from the checkpoint with a consumer of this run's own; any failure ends the run
        (``_run`` starts a new one from the checkpoint again)."""
        self.stats = await self.store.stats(self.d)
        await self._resync()
        # the checkpoint's append may be only partly forwarded (very large appends are split):
        # read from it, and skip what is already there
        start = max(self.d.start_seq, self.checkpoint[0], self.stats.pos + 1)
        name = f"link-{self.d.key}-{uuid.uuid4().hex[:12]}"
        await self.store.open_consumer(self.d, name, start)
        self.stats.consumer = name
        js = self.nc.jetstream()
        psub = await js.pull_subscribe_bind(
            durable=name, stream=self.subjects.log_stream(self.d.store), pending_msgs_limit=4096
        )
        try:
            while not self._stopping:
                batch, pause = BATCH_BY_LEVEL.get(self.memory_level(), BATCH_BY_LEVEL["normal"])
                try:
                    msgs = await psub.fetch(batch, timeout=1.0)
                except TimeoutError:
                    continue
                if not msgs or self._stopping:
                    continue
                self._busy = True
                try:
                    await self._process(msgs)
                finally:
                    self._busy = False
                backfilling = (msgs[-1].metadata.num_pending or 0) > 0
                if backfilling and pause:
                    await asyncio.sleep(pause)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.store.close_consumer(self.d, name)

    # --- one batch --------------------------------------------------------------------------------
    def _decode_and_match(self, msgs: list[Msg]) -> dict[int, list[tuple[dict[str, Any], bool]]]:
        """The events of ``msgs`` in the source, each with the filter's verdict, by position: what
        ``_process`` does first, run on a worker thread when the filter has client regexes."""
        out: dict[int, list[tuple[dict[str, Any], bool]]] = {}
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            try:
                stream_id = self.subjects.stream_id_of(msg.subject)
            except ValueError:
                continue
            if not self.in_source(stream_id):
                continue
            sm = StoredMsg(subject=msg.subject, seq=seq, ts_ns=0, headers=msg.headers or {}, data=msg.data)
            out[seq] = list(_matched(decode_commit(sm, stream_id, "link"), self.match))
        return out

    async def _process(self, msgs: list[Msg]) -> None:
        stats = self.stats
        out: list[_Out] = []
        last_seq = stats.pos
        pre = await run_matching(self._decode_and_match, msgs) if self.match_off_loop else None
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            last_seq = max(last_seq, seq)
            try:
                stream_id = self.subjects.stream_id_of(msg.subject)
            except ValueError:  # a message someone else published into the log (ADR 0013)
                continue
            if not self.in_source(stream_id):
                continue
            counting = seq > stats.pos
            sm = StoredMsg(subject=msg.subject, seq=seq, ts_ns=0, headers=msg.headers or {}, data=msg.data)
            pairs = pre.get(seq, []) if pre is not None else _matched(decode_commit(sm, stream_id, "link"), self.match)
            for ev, matched in pairs:
                if not matched:
                    if counting:
                        stats.filtered += 1
                    continue
                item = _Out(seq, ev, self._derive(ev, seq))
                if item.mark <= self.checkpoint or item.key in self.written:  # forwarded before
                    if counting:
                        stats.processed += 1
                    continue
                out.append(item)
        for chunk in _chunks(out):
            written = await self._append(chunk)
            for item in written:
                if item.seq > stats.pos:
                    stats.processed += 1
            if written:
                last = written[-1]
                stats.last_event = {
                    "stream_id": last.source["stream_id"],
                    "version": last.source["version"],
                    "event_id": last.source["event_id"],
                    "link_version": self.version,
                    "at": time.time_ns() // 1_000_000,
                }
        stats.pos = last_seq
        await self.store.save_stats(self.d, stats)
        await msgs[-1].ack()  # ack policy "all": everything up to it

    def _derive(self, ev: dict[str, Any], seq: int) -> dict[str, Any]:
        meta = dict(ev.get("metadata") or {})
        meta["source_stream"] = ev["stream_id"]
        meta["source_version"] = ev["version"]
        meta["source_position"] = seq
        meta["source_event_id"] = ev["event_id"]
        out: dict[str, Any] = {
            "event_id": derived_event_id(self.d.name, ev["event_id"]),
            "event_type": ev["event_type"],
            "data": self.transform(ev["data"]),
            "metadata": meta,
        }
        if ev.get("tags") is not None:
            out["tags"] = ev["tags"]
        if ev.get("data_content_type", "application/json") != "application/json":
            out["data_content_type"] = ev["data_content_type"]
        if ev.get("metadata_content_type", "application/json") != "application/json":
            out["metadata_content_type"] = ev["metadata_content_type"]
        return out

    async def _append(self, chunk: list[_Out]) -> list[_Out]:
        """Append a chunk at the version the driver expects; returns what this call wrote."""
        delay = 0.1
        while chunk:
            try:
                reply = await self.store.append(self.d, self.version, [c.event for c in chunk])
            except WrongExpectedVersionError:
                await self._resync()
                chunk = [c for c in chunk if c.mark > self.checkpoint and c.key not in self.written]
                continue
            except (InvalidRequestError, PayloadTooLargeError) as exc:
                raise LinkFailedError(
                    f"the stream service refused an event for {self.d.stream_id!r}: {exc.message}"
                ) from exc
            except (GatewayTimeoutError, UnavailableError):
                await asyncio.sleep(delay)  # same ids at the same version: a resend is recognised
                delay = min(delay * 2, 5.0)
                continue
            self.version = reply.version
            self.checkpoint = chunk[-1].mark
            self._ck_rev = await self.store.save_checkpoint(
                self.d, Checkpoint(*self.checkpoint, link_version=self.version), self._ck_rev
            )
            return chunk
        return []


def _chunks(items: list[_Out]) -> list[list[_Out]]:
    """Appends of at most MAX_EVENTS_PER_APPEND events and about MAX_BYTES_PER_APPEND bytes."""
    out: list[list[_Out]] = []
    cur: list[_Out] = []
    size = 0
    for item in items:
        n = len(msgpack.packb(item.event, use_bin_type=True)) + 64
        if cur and (len(cur) >= MAX_EVENTS_PER_APPEND or size + n > MAX_BYTES_PER_APPEND):
            out.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += n
    if cur:
        out.append(cur)
    return out


class Supervisor(LeaseSupervisor[Definition, Driver]):
    """Runs in every instance: keeps a driver going for each running link whose lease it holds."""

    name = "link-supervisor"

    def __init__(
        self,
        nc: Client,
        store: LinkStore,
        subjects: Subjects,
        owner: str,
        lease_ttl_s: float = 5.0,
        memory_level: MemoryLevel | None = None,
    ) -> None:
        super().__init__(store.kv, owner, lease_ttl_s)
        self.nc = nc
        self.store = store
        self.subjects = subjects
        self.memory_level = memory_level
        self._sub: Any = None

    @property
    def drivers(self) -> dict[tuple[str, str], tuple[Driver, Lease]]:
        return self.workers

    async def start(self) -> None:
        async def on_change(msg: Msg) -> None:
            self._wake.set()

        # every write to a definition is a message on its KV subject: react at once
        self._sub = await self.nc.subscribe(self.store.changes_subject(), cb=on_change)
        await super().start()

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def stop(self) -> None:
        await self._unsubscribe()
        await super().stop()

    async def abandon(self) -> None:
        """Stop without releasing leases: what a crash looks like (tests)."""
        await self._unsubscribe()
        await super().abandon()

    async def wanted(self) -> dict[tuple[str, str], Definition]:
        return {(d.store, d.key): d for d in await self.store.definitions() if d.status == "running"}

    def lease_key(self, key: tuple[str, str]) -> str:
        return self.store.lease_key(*key)

    def make_worker(self, item: Definition) -> Driver:
        return Driver(self.nc, self.store, self.subjects, item, self.memory_level)

    def finished(self, worker: Driver) -> bool:
        return worker.done


def _matched(
    events: Iterable[dict[str, Any]], match: Callable[[dict[str, Any]], bool]
) -> Iterator[tuple[dict[str, Any], bool]]:
    return ((ev, match(ev)) for ev in events)
