"""The schema registry (SPEC.md §6): each store's schemas, loaded from its KV bucket and watched.

``SchemaRegistry`` loads the schemas of each store from the store's KV bucket
``<prefix>-schema-<store>`` on first use and keeps them current by watching the bucket's subjects
(docs/adr/0006-schema-registry-and-upcasting.md). The pure half (steps, chains, JSON Schema
validation, ``Schemas``) is ``steps.py``; this module is the only one of the two doing I/O.
The stream service validates appends and upcasts reads with it; the subscription and schema
services call the same API::

    registry = SchemaRegistry(log, subjects)         # log: esdb_gater.shared.log.jetstream.Log, started
    schemas = await registry.schemas(store)          # loaded and watched from now on
    schemas.validate("OrderPlaced", data, version)   # raises InvalidRequestError naming the field
    rows = schemas.upcast(rows)                      # RecordedEvent dicts, updated in place
    await registry.stop()

``registry.loaded(store)`` is the non-blocking fast path (None until the first load is done
or while a change is being read). A store's ``Schemas`` object is live: the registry replaces
its types as the bucket changes, so ``schemas.upcast`` can be handed to code that wants a
plain ``rows -> rows`` callable (the subscription service's drivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError as PydanticValidationError

from esdb_gater.shared.core.subjects import Subjects, kv_token
from esdb_gater.shared.log.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log, StoredMsg
from esdb_gater.shared.log.kv import is_deleted, last_msgs, stream_subjects
from esdb_gater.shared.upcasting.steps import (
    Schemas,
    TypeSchemas,
)

__all__ = ["SchemaRegistry"]

log = logging.getLogger(__name__)


# --- the registry -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    """One store's schemas and the subscription that keeps them current."""

    bucket: str
    schemas: Schemas = field(default_factory=Schemas)
    keys: dict[str, str] = field(default_factory=dict)  # KV key -> event type
    seqs: dict[str, int] = field(default_factory=dict)  # KV key -> sequence of the applied value
    sub: Subscription | None = None
    dirty: set[str] = field(default_factory=set)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    synced_seq: int = -1  # the bucket's last sequence when it was last read whole
    used: float = 0.0  # loop time of the last use: idle watches are dropped (ADR 0016)


class SchemaRegistry:
    """Schemas of every store this process serves, loaded on first use and watched.

    Changes reach the registry through a core subscription to the bucket's subjects
    (``$KV.<bucket>.>``): each message (put, delete, or a refused compare-and-set) marks its key,
    and the key is read again from the stream leader, so the registry holds what the bucket holds.
    ``schemas(store)`` waits for marked keys to be read, so a request that follows a change on
    the same server sees it. A periodic check of the bucket's last sequence (``resync_s``) reloads
    a store whose notifications were missed (e.g. while the connection was down)."""

    def __init__(
        self,
        log: Log,
        subjects: Subjects,
        *,
        resync_s: float = 30.0,
        settle_timeout_s: float = 2.0,
        idle_evict_s: float = 300.0,
    ) -> None:
        self.log = log
        self.subjects = subjects
        self.resync_s = resync_s
        self.settle_timeout_s = settle_timeout_s
        # a store's watch (a core subscription and its schemas) unused this long is dropped, so
        # requests naming ever new stores cannot grow the registry without bound (ADR 0016)
        self.idle_evict_s = idle_evict_s
        self._watches: dict[str, _Watch] = {}
        self._opening: dict[str, asyncio.Future[_Watch]] = {}
        self._resync: asyncio.Task[None] | None = None
        self._stopped = False

    # --- the API --------------------------------------------------------------------------------
    def loaded(self, store: str) -> Schemas | None:
        """The store's schemas when they are loaded and no change is pending; else None (then
        call ``schemas``). The read path's fast check."""
        w = self._watches.get(store)
        if w is None or not w.settled.is_set():
            return None
        w.used = asyncio.get_running_loop().time()
        return w.schemas

    async def schemas(self, store: str) -> Schemas:
        """The store's schemas, loading and watching them on first use and waiting (up to
        ``settle_timeout_s``) for changes already announced to be read."""
        w = self._watches.get(store)
        if w is None:
            w = await self._open(store)
        w.used = asyncio.get_running_loop().time()
        if not w.settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.settled.wait(), self.settle_timeout_s)
        return w.schemas

    async def upcast(self, store: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        schemas = self.loaded(store) or await self.schemas(store)
        return schemas.upcast(rows)

    async def refresh(self, store: str, event_type: str) -> None:
        """Read one type again now (the schema service calls it after writing it)."""
        w = self._watches.get(store)
        if w is None:
            await self._open(store)
            return
        await self._reload_key(w, kv_token(event_type))

    async def stop(self) -> None:
        self._stopped = True
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync
        for w in self._watches.values():
            if w.worker is not None:
                w.worker.cancel()
            if w.sub is not None:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
        self._watches.clear()

    def watched(self) -> int:
        """How many stores' schemas are held (and watched) now."""
        return len(self._watches)

    async def evict_idle(self) -> int:
        """Drop the watches not used for ``idle_evict_s``; returns how many. A dropped store is
        loaded again on its next use."""
        cutoff = asyncio.get_running_loop().time() - self.idle_evict_s
        idle = [(store, w) for store, w in self._watches.items() if w.used <= cutoff]
        for store, w in idle:
            if self._watches.get(store) is w:
                del self._watches[store]
            if w.worker is not None:
                w.worker.cancel()
            if w.sub is not None:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
        return len(idle)

    # --- loading ------------------------------------------------------------------------------
    async def _open(self, store: str) -> _Watch:
        pending = self._opening.get(store)
        if pending is not None:
            return await asyncio.shield(pending)
        await self.evict_idle()
        fut: asyncio.Future[_Watch] = asyncio.get_running_loop().create_future()
        self._opening[store] = fut
        try:
            w = _Watch(self.subjects.schema_bucket(store))
            # subscribe first, then read: a change made while reading is announced, not lost

            async def on_change(msg: Msg) -> None:
                self._on_change(w, msg)

            w.sub = await self.log.nc.subscribe(self.subjects.kv_subject(w.bucket, ">"), cb=on_change)
            try:
                await self._load(w)
            except BaseException:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
                raise
            w.settled.set()
            w.used = asyncio.get_running_loop().time()
            self._watches[store] = w
            if self._resync is None and self.resync_s > 0:
                self._resync = asyncio.create_task(self._resync_loop())
            fut.set_result(w)
            return w
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: concurrent openers re-raise it themselves
            raise
        finally:
            self._opening.pop(store, None)

    async def _info(self, w: _Watch) -> dict[str, Any] | None:
        try:
            return await self.log.api(f"$JS.API.STREAM.INFO.{self.subjects.kv_stream(w.bucket)}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise

    async def _load(self, w: _Watch) -> None:
        """Read the whole bucket: its subjects, then the last value of each (shared/log/kv.py)."""
        name = self.subjects.kv_stream(w.bucket)
        listing = await stream_subjects(self.log, name, self.subjects.kv_subject(w.bucket, ">"))
        types: dict[str, TypeSchemas] = {}
        keys: dict[str, str] = {}
        seqs: dict[str, int] = {}
        prefix = len(self.subjects.kv_subject(w.bucket, ""))
        for sm in await last_msgs(self.log, name, listing.subjects) if listing is not None else []:
            key = sm.subject[prefix:]
            t = self._decode(w, sm)
            seqs[key] = sm.seq
            if t is not None:
                types[t.event_type] = t
                keys[key] = t.event_type
        w.schemas.types = types
        w.keys = keys
        w.seqs = seqs
        w.synced_seq = listing.last_seq if listing is not None else 0

    def _decode(self, w: _Watch, sm: StoredMsg) -> TypeSchemas | None:
        if is_deleted(sm):
            return None
        try:
            return TypeSchemas.from_stored(json.loads(sm.data))
        except (ValueError, KeyError, TypeError, PydanticValidationError):
            log.warning("ignoring a malformed schema in %s at %s", w.bucket, sm.subject)
            return None

    def _apply(self, w: _Watch, key: str, sm: StoredMsg | None) -> None:
        if sm is not None:
            if sm.seq < w.seqs.get(key, 0):
                return  # older than what we hold
            w.seqs[key] = sm.seq
        t = self._decode(w, sm) if sm is not None else None
        types = dict(w.schemas.types)  # readers keep the dict they took
        old = w.keys.pop(key, None)
        if old is not None:
            types.pop(old, None)
        if t is not None:
            types[t.event_type] = t
            w.keys[key] = t.event_type
        w.schemas.types = types

    async def _reload_key(self, w: _Watch, key: str) -> None:
        try:
            sm = await self.log.leader_get(
                self.subjects.kv_stream(w.bucket), {"last_by_subj": self.subjects.kv_subject(w.bucket, key)}
            )
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            sm = None
        self._apply(w, key, sm)

    # --- watching -----------------------------------------------------------------------------
    def _on_change(self, w: _Watch, msg: Msg) -> None:
        key = msg.subject[len(self.subjects.kv_subject(w.bucket, "")) :]
        w.dirty.add(key)
        w.settled.clear()
        if w.worker is None or w.worker.done():
            w.worker = asyncio.create_task(self._drain(w))

    async def _drain(self, w: _Watch) -> None:
        try:
            while w.dirty:
                key = w.dirty.pop()
                try:
                    await self._reload_key(w, key)
                except Exception as exc:
                    log.warning("could not read schema %s of %s: %s; the next resync will", key, w.bucket, exc)
                    w.synced_seq = -1  # force a full reload at the next resync
        finally:
            # never leave readers waiting: on cancellation the resync catches up
            w.settled.set()

    async def _resync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stopped:
            await asyncio.sleep(min(self.resync_s, self.idle_evict_s))
            with contextlib.suppress(Exception):
                await self.evict_idle()
            if loop.time() - last < self.resync_s:
                continue
            last = loop.time()
            for store, w in list(self._watches.items()):
                try:
                    si = await self._info(w)
                    seq = int(si.get("state", {}).get("last_seq", 0)) if si else 0
                    if seq != w.synced_seq:
                        await self._load(w)
                except Exception as exc:
                    log.warning("schema resync of store %s failed: %s", store, exc)
