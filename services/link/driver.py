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
* the checkpoint is therefore the derived stream itself; the consumer's ack floor and the
  ``stat`` counters (with the position they have counted up to) only save work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.link.rules import compile_filter, compile_transform, pattern_regex
from services.link.store import Definition, LinkStore, Stats
from shared.errors import (
    GatewayTimeoutError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnavailableError,
    WrongExpectedVersionError,
)
from shared.eventlog import decode_commit
from shared.jetstream import StoredMsg
from shared.lease import Lease, LeaseSupervisor
from shared.models.link import DERIVED_PREFIX
from shared.subjects import Subjects
from shared.telemetry import emit

__all__ = ["BATCH_BY_LEVEL", "Driver", "MemoryLevel", "Supervisor", "derived_event_id"]

log = logging.getLogger(__name__)

# memory level -> (appends fetched per batch, pause between backfill batches in seconds)
BATCH_BY_LEVEL: Final = {"normal": (256, 0.0), "elevated": (32, 0.05), "critical": (8, 0.25)}
MAX_EVENTS_PER_APPEND: Final = 500
MAX_BYTES_PER_APPEND: Final = 1024 * 1024
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
        self.transform = compile_transform(d.transform)
        self.in_source = self._source_predicate(d)
        self.version = -1
        self.checkpoint: tuple[int, int] = (0, -1)
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
        """Where the derived stream is: its version and the last source event it holds."""
        self.version, self.checkpoint = await self.store.derived_tail(self.d)
        if self.checkpoint == (0, -1) and self.stats.pos > 0 and self.version >= 0:
            # no event of this link in the stream's tail (someone else wrote there): fall back
            # to the counters, which only ever count appends already forwarded
            self.checkpoint = (self.stats.pos, 1 << 62)

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
    async def _process(self, msgs: list[Msg]) -> None:
        stats = self.stats
        out: list[_Out] = []
        last_seq = stats.pos
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            last_seq = max(last_seq, seq)
            stream_id = self.subjects.stream_id_of(msg.subject)
            if not self.in_source(stream_id):
                continue
            counting = seq > stats.pos
            sm = StoredMsg(subject=msg.subject, seq=seq, ts_ns=0, headers=msg.headers or {}, data=msg.data)
            for ev in decode_commit(sm, stream_id):
                if not self.match(ev):
                    if counting:
                        stats.filtered += 1
                    continue
                item = _Out(seq, ev, self._derive(ev, seq))
                if item.mark <= self.checkpoint:  # forwarded before (a redelivery)
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
                chunk = [c for c in chunk if c.mark > self.checkpoint]
                continue
            except (InvalidRequestError, PayloadTooLargeError) as exc:
                raise LinkFailedError(
                    f"the stream service refused an event for {self.d.stream_id!r}: {exc.message}"
                ) from exc
            except (GatewayTimeoutError, UnavailableError):
                await asyncio.sleep(delay)  # same ids at the same version: a resend is recognised
                delay = min(delay * 2, 5.0)
                continue
            self.version = int(reply["version"])
            self.checkpoint = chunk[-1].mark
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
