"""Keeping the causation indexes as events are written: an indexer per store in every instance,
all pulling from the store's one durable consumer ``causation-ix`` (a work queue).

An indexer writes the index messages of a batch of appends (each publish acknowledged by
JetStream), then acks those appends (explicit acks). A crash between the two writes the same
messages again: every index subject keeps only its last value, so writing one twice changes
nothing. Index writes commute, so instances need no lease and no order: JetStream spreads the
appends over the instances' pulls, and one that dies leaves its unacknowledged appends to be
delivered to another after ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from esdb_gater.services.causation.store import CONSUMER, CausationStore
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import StoredMsg

__all__ = ["Indexer", "IndexerPool"]

log = logging.getLogger(__name__)

BATCH = 256
FETCH_WAIT_S = 5.0  # a pull waits on the server this long: an idle store costs one request per wait


class Indexer:
    def __init__(self, nc: Client, db: CausationStore, subjects: Subjects, store: str) -> None:
        self.nc = nc
        self.db = db
        self.subjects = subjects
        self.store = store
        self.indexed = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"causation-ix-{self.store}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._index()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("causation indexer of %s interrupted, retrying", self.store, exc_info=True)
                self.db.forget(self.store)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _index(self) -> None:
        await self.db.ensure(self.store)
        js = self.nc.jetstream()
        psub = await js.pull_subscribe_bind(
            durable=CONSUMER, stream=self.subjects.log_stream(self.store), pending_msgs_limit=BATCH * 4
        )
        try:
            while True:
                try:
                    msgs = await psub.fetch(BATCH, timeout=FETCH_WAIT_S)
                except TimeoutError:
                    continue
                except Exception as exc:
                    if type(exc).__name__ in ("NotFoundError", "ServiceUnavailableError"):
                        await asyncio.sleep(0.5)
                        self.db.forget(self.store)
                        await self.db.ensure(self.store)
                        continue
                    raise
                if msgs:
                    await self._batch(msgs)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _batch(self, msgs: list[Msg]) -> None:
        entries: list[tuple[str, bytes]] = []
        for msg in msgs:
            sm = StoredMsg(
                subject=msg.subject, seq=msg.metadata.sequence.stream, ts_ns=0, headers=msg.headers or {}, data=msg.data
            )
            try:
                entries.extend(self.db.entries_of(self.store, sm, self.subjects.stream_id_of(msg.subject)))
            except Exception:  # not a commit we can read: nothing to index in it
                log.warning("causation indexer of %s: skipping unreadable message %d", self.store, sm.seq)
        await self.db.write(entries)
        for msg in msgs:
            await msg.ack()
        self.indexed += len(msgs)


class IndexerPool:
    """Runs in every instance: an indexer for each store (stores are found every few seconds)."""

    def __init__(self, nc: Client, db: CausationStore, subjects: Subjects, interval_s: float = 2.0) -> None:
        self.nc = nc
        self.db = db
        self.subjects = subjects
        self.interval_s = interval_s
        self.indexers: dict[str, Indexer] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="causation-indexers")

    def poke(self) -> None:
        """Look for new stores now (a query named one this instance does not index yet)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for indexer in list(self.indexers.values()):
            await indexer.stop()
        self.indexers.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("causation indexers: looking for stores failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def reconcile(self) -> None:
        stores = set(await self.db.stores())
        for store in list(self.indexers):
            if store not in stores or self.indexers[store].done:
                await self.indexers.pop(store).stop()
        for store in sorted(stores - set(self.indexers)):
            if not await self.db.written(store):
                continue  # looked at again next round; nothing to index, no consumer (ADR 0016)
            indexer = Indexer(self.nc, self.db, self.subjects, store)
            await indexer.start()
            self.indexers[store] = indexer

    def status(self) -> dict[str, Any]:
        return {store: ix.indexed for store, ix in self.indexers.items()}
