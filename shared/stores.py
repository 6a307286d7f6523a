"""What services other than the stream service need to know about a store.

A store exists when its event log (the JetStream stream ``<prefix>-log-<store>``) exists; the
stream service creates it. Services that keep their own per-store buckets (snapshots, schemas)
take the store's replicas and storage from that stream, and create their KV buckets with the
same stream settings.
"""

from __future__ import annotations

from typing import Any

from shared.errors import StoreNotFoundError
from shared.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log
from shared.settings import Settings, StoreConfig
from shared.subjects import Subjects

__all__ = ["kv_bucket_stream", "store_config", "store_config_for_write"]


async def store_config(log: Log, subjects: Subjects, settings: Settings | None, store: str) -> StoreConfig:
    """The store's replicas and storage, read from its event log; ``store_not_found`` when it
    has none, unless ``settings`` say stores are created on first use (then the configured
    defaults). Services that never create stores pass no settings."""
    try:
        si = await log.api(f"$JS.API.STREAM.INFO.{subjects.log_stream(store)}")
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
        if settings is None or not settings.auto_create_stores:
            raise StoreNotFoundError(f"store {store!r} does not exist", details={"store": store}) from None
        return settings.stores.get(store, settings.default_store)
    c = si["config"]
    return StoreConfig(replicas=int(c.get("num_replicas", 1)), storage=c.get("storage", "file"))


async def store_config_for_write(log: Log, subjects: Subjects, settings: Settings, store: str) -> StoreConfig:
    """For a write of another service (a snapshot, a schema): the store's replicas and storage.
    A store that does not exist is made first when stores are created on first use, by the
    stream service on its services-only subject, so it counts against
    ``quotas.auto_created_stores`` like a first append (docs/adr/0016-reserved-streams-and-quotas.md);
    ``store_not_found`` otherwise."""
    try:
        return await store_config(log, subjects, None, store)
    except StoreNotFoundError:
        if not settings.auto_create_stores:
            raise
    from shared.peers import Peers

    await Peers(log.nc, subjects, timeout=settings.request_timeout_s).call(store, "store", "create", {}, internal=True)
    return await store_config(log, subjects, None, store)


def kv_bucket_stream(subjects: Subjects, bucket: str, description: str, cfg: StoreConfig, store: str) -> dict[str, Any]:
    """The JetStream stream config of a KV bucket (ADR-8 layout: one value per key, rollups,
    direct gets), with the store's replicas and storage."""
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
        "metadata": {"esdb_gater_store": store},
    }
