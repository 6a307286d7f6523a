"""Stores: the log stream's config, listing the stores, and what other services read of a store.

A store exists when its event log (the JetStream stream ``<prefix>-log-<store>``) exists; the
stream service creates it with ``log_stream_config``. Services that keep their own per-store
streams or buckets (indexes, snapshots, schemas, archives) take the store's replicas and storage
from that stream (``store_config``, cached by ``StoreConfigs``). Services that only need to know
a store exists ask the stream service (``KnownStores``), through a ``StoreCaller`` the runtime
gives them (``shared/runtime/peers.py``), so this layer imports nothing above it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

from pydantic import BaseModel

from esdb_gater.shared.core.errors import StoreNotFoundError
from esdb_gater.shared.core.settings import Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, create_stream
from esdb_gater.shared.log.port import LogPort, StreamList, StreamNames
from esdb_gater.shared.log.quotas import IdleMap
from esdb_gater.shared.models.peer_ops import STORE_CREATE, STORE_INFO, PeerOp
from esdb_gater.shared.models.stream import CreateStoreRequest, StoreInfoRequest

__all__ = [
    "AUTO_CREATED",
    "STORE_METADATA",
    "KnownStores",
    "StoreBuckets",
    "StoreCaller",
    "StoreConfigs",
    "count_auto_created",
    "create_store",
    "kv_bucket_stream",
    "last_position",
    "list_stores",
    "log_stream_config",
    "placement_of",
    "store_config",
    "store_config_for_write",
    "store_config_of",
]

STORE_METADATA: Final = "esdb_gater_store"  # metadata of every stream of a store: the store's name
AUTO_CREATED: Final = "esdb_gater_auto_created"  # log stream metadata of a store made on first use

ReqT = TypeVar("ReqT", bound=BaseModel)
RepT = TypeVar("RepT", bound=BaseModel)


# --- the log stream -------------------------------------------------------------------------------


def log_stream_config(subjects: Subjects, store: str, cfg: StoreConfig, *, auto: bool = False) -> dict[str, Any]:
    """The JetStream config of the store's event log (docs/adr/0002-event-log-layout.md);
    ``auto``: made on first use (marked, and counted against ``quotas.auto_created_stores``)."""
    metadata = {STORE_METADATA: store, "esdb_gater_layout": "1"}
    if auto:
        metadata[AUTO_CREATED] = "1"
    return {
        "name": subjects.log_stream(store),
        "description": cfg.description or f"esdb-gater event log of store {store}",
        "subjects": [f"{subjects.log_root(store)}.>"],
        "retention": "limits",
        "storage": cfg.storage,
        "num_replicas": cfg.replicas,
        "max_age": int(cfg.max_age_s * 1e9),
        "max_bytes": cfg.max_bytes,
        "max_msgs": -1,
        "max_msgs_per_subject": -1,
        "discard": "old",
        "duplicate_window": int(cfg.duplicate_window_s * 1e9),
        "allow_direct": True,
        "allow_atomic": True,  # ADR-50 batches of stream.append_multi (docs/adr/0023-…)
        "metadata": metadata,
    }


def kv_bucket_stream(subjects: Subjects, bucket: str, description: str, cfg: StoreConfig, store: str) -> dict[str, Any]:
    """The JetStream stream config of a store's KV bucket (ADR-8 layout: one value per key,
    rollups, direct gets), with the store's replicas and storage."""
    return {
        "name": subjects.kv_stream(bucket),
        "description": description,
        "subjects": [subjects.kv_subject(bucket, ">")],
        "retention": "limits",
        "max_msgs_per_subject": 1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": -1,
        "max_consumers": -1,
        "discard": "new",
        "storage": cfg.storage,
        "num_replicas": cfg.replicas,
        "duplicate_window": 120_000_000_000,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "allow_direct": True,
        "metadata": {STORE_METADATA: store},
    }


def store_config_of(config: dict[str, Any]) -> StoreConfig:
    """The store's config from its log stream's JetStream config."""
    return StoreConfig(
        replicas=int(config.get("num_replicas", 1)),
        storage="memory" if config.get("storage") == "memory" else "file",
        max_age_s=int(config.get("max_age", 0)) / 1e9,
        max_bytes=int(config.get("max_bytes", -1)),
        duplicate_window_s=int(config.get("duplicate_window", 120_000_000_000)) / 1e9,
        description=str(config.get("description", "")),
    )


def placement_of(config: dict[str, Any]) -> StoreConfig:
    """Replicas and storage only, from any stream's JetStream config (the rest left default)."""
    return StoreConfig(replicas=int(config.get("num_replicas", 1)), storage=config.get("storage", "file"))


async def last_position(log: LogPort, subjects: Subjects, store: str) -> int:
    """The position of the store's last append (0: none yet); ``JetStreamApiError``
    ``ERR_STREAM_NOT_FOUND`` when the store has no log."""
    si = await log.stream_info(subjects.log_stream(store))
    return int(si.get("state", {}).get("last_seq", 0))


# --- listing ----------------------------------------------------------------------------------------


async def _pages(page_at: Callable[[int], Awaitable[StreamNames | StreamList]]) -> AsyncIterator[list[Any]]:
    """The pages of a ``STREAM.NAMES`` / ``STREAM.LIST`` answer (``page_at(offset)``)."""
    offset = 0
    while True:
        reply = await page_at(offset)
        page = reply.get("streams") or []
        yield page
        offset += len(page)
        if not page or offset >= int(reply.get("total", 0)):
            return


async def list_stores(log: LogPort, subjects: Subjects) -> list[str]:
    """Every store (the log streams ``<prefix>-log-<store>``), sorted."""
    prefix = subjects.log_stream_prefix()
    out: list[str] = []
    async for names in _pages(lambda offset: log.stream_names(offset=offset)):
        out.extend(n[len(prefix) :] for n in names if n.startswith(prefix))
    return sorted(out)


async def count_auto_created(log: LogPort, subjects: Subjects) -> int:
    """How many stores were made on first use (from the log streams' metadata, so every
    instance counts the same)."""
    prefix = subjects.log_stream_prefix()
    count = 0
    # only the log streams (subject filter), not every stream of the account
    async for page in _pages(lambda offset: log.list_streams(subject=f"{subjects.prefix}.log.>", offset=offset)):
        for si in page:
            cfg = si.get("config") or {}
            meta = cfg.get("metadata") or {}
            if str(cfg.get("name", "")).startswith(prefix) and meta.get(AUTO_CREATED) == "1":
                count += 1
    return count


# --- a store's config, for the other services ----------------------------------------------------------


async def store_config(log: LogPort, subjects: Subjects, settings: Settings | None, store: str) -> StoreConfig:
    """The store's replicas and storage, read from its event log; ``store_not_found`` when it
    has none, unless ``settings`` say stores are created on first use (then the configured
    defaults). Services that never create stores pass no settings."""
    try:
        si = await log.stream_info(subjects.log_stream(store))
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
        if settings is None or not settings.auto_create_stores:
            raise StoreNotFoundError(f"store {store!r} does not exist", details={"store": store}) from None
        return settings.stores.get(store, settings.default_store)
    return placement_of(si["config"])


class StoreCaller(Protocol):
    """A request to another service (``shared/runtime/peers.py``'s ``Peers`` is one)."""

    async def call(self, store: str, op: PeerOp[ReqT, RepT], request: ReqT, *, wait: float | None = None) -> RepT: ...


async def create_store(peers: StoreCaller, store: str) -> None:
    """Have the stream service make the store, on its services-only subject, so it counts
    against ``quotas.auto_created_stores`` like a first append
    (docs/adr/0016-reserved-streams-and-quotas.md)."""
    await peers.call(store, STORE_CREATE, CreateStoreRequest())


async def store_config_for_write(
    log: LogPort, subjects: Subjects, settings: Settings, store: str, peers: StoreCaller
) -> StoreConfig:
    """For a write of another service (a snapshot, a schema): the store's replicas and storage.
    A store that does not exist is made first (``create_store``) when stores are created on
    first use; ``store_not_found`` otherwise."""
    try:
        return await store_config(log, subjects, None, store)
    except StoreNotFoundError:
        if not settings.auto_create_stores:
            raise
    await create_store(peers, store)
    return await store_config(log, subjects, None, store)


class StoreConfigs:
    """The stores' replicas and storage (``store_config``, never creating a store), each kept
    until unused for ``idle_s`` seconds (ADR 0016)."""

    def __init__(self, log: LogPort, subjects: Subjects, idle_s: float) -> None:
        self.log = log
        self.subjects = subjects
        self._cache: IdleMap[str, StoreConfig] = IdleMap(idle_s)

    async def get(self, store: str) -> StoreConfig:
        """``store_not_found`` when the store has no log."""
        cfg = self._cache.get(store)
        if cfg is None:
            cfg = await store_config(self.log, self.subjects, None, store)
            self._cache[store] = cfg
        return cfg

    def forget(self, store: str) -> None:
        self._cache.pop(store, None)


class KnownStores:
    """Whether a store exists, asked of the stream service (which owns stores) and remembered
    until unused for ``quotas.idle_evict_s`` (ADR 0016)."""

    def __init__(self, peers: StoreCaller, settings: Settings) -> None:
        self.peers = peers
        self.settings = settings
        self._known: IdleMap[str, bool] = IdleMap(settings.quotas.idle_evict_s)

    async def ensure(self, store: str, *, create: bool = False) -> None:
        """``store_not_found`` unless the store exists; ``create`` (writes only, ADR 0016): make
        it when stores are created on first use. Reads never create a store."""
        if store in self._known:
            return
        try:
            await self.peers.call(store, STORE_INFO, StoreInfoRequest())
        except StoreNotFoundError:
            if not self.settings.auto_create_stores:
                raise
            if not create:
                return  # a read: answered as for an empty store, and nothing is made (ADR 0016)
            await create_store(self.peers, store)  # counted as made on first use
        self._known.add(store)


class StoreBuckets:
    """A service's own KV bucket per store (snapshots, schemas): made on the store's first write
    with the store's replicas and storage (``kv_bucket_stream``), and remembered until unused for
    ``quotas.idle_evict_s`` (ADR 0016). ``description`` may name ``{store}``."""

    def __init__(
        self,
        log: LogPort,
        subjects: Subjects,
        settings: Settings,
        peers: StoreCaller,
        bucket_of: Callable[[str], str],
        description: str,
    ) -> None:
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.peers = peers
        self.bucket_of = bucket_of
        self.description = description
        self._ready: IdleMap[str, StoreConfig] = IdleMap(settings.quotas.idle_evict_s)

    def __contains__(self, store: object) -> bool:
        return store in self._ready

    async def for_write(self, store: str) -> StoreConfig:
        """The bucket's placement, the bucket made first when it does not exist; the store must
        exist unless stores are created on first use (``store_config_for_write``)."""
        cfg = self._ready.get(store)
        if cfg is not None:
            return cfg
        cfg = await store_config_for_write(self.log, self.subjects, self.settings, store, self.peers)
        description = self.description.format(store=store)
        # a bucket that exists already (maybe with other limits) is used as it is
        await create_stream(self.log, kv_bucket_stream(self.subjects, self.bucket_of(store), description, cfg, store))
        self._ready[store] = cfg
        return cfg

    async def for_read(self, store: str) -> StoreConfig | None:
        """For reads, which create nothing (ADR 0016): the bucket's placement, or None when the
        store has no bucket (nothing was ever written); ``store_not_found`` when the store does
        not exist and stores are not created on first use."""
        cfg = self._ready.get(store)
        if cfg is not None:
            return cfg
        try:
            si = await self.log.stream_info(self.subjects.kv_stream(self.bucket_of(store)))
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            await store_config(self.log, self.subjects, self.settings, store)  # store_not_found, or go on
            return None
        cfg = placement_of(si["config"])
        self._ready[store] = cfg
        return cfg
