"""Schemas on JetStream: the only module of the schema service that talks to JetStream.

One KV bucket per store, ``<prefix>-schema-<store>`` (stream ``KV_<bucket>``, history 1, direct
gets), one key per event type (``kv_token`` of the type), whose value is the JSON document
``{"event_type": T, "versions": {"1": {...schema, "registered_at": ms}, ...}}``. Keeping every
version of a type in one value makes a registration one compare-and-set
(``Nats-Expected-Last-Subject-Sequence``): the chain is checked against exactly the versions
it replaces, even when two instances register versions of one type at once. Removing a type
writes a KV delete marker, so watchers see it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from esdb_gater.shared.core.errors import InvalidRequestError, UnavailableError
from esdb_gater.shared.core.settings import Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects, kv_token
from esdb_gater.shared.log.jetstream import ERR_WRONG_LAST_SEQUENCE, H_EXPECTED_LAST_SUBJECT_SEQ, JetStreamApiError, Log
from esdb_gater.shared.log.kv import H_KV_OP, is_deleted
from esdb_gater.shared.log.quotas import check_quota
from esdb_gater.shared.log.stores import StoreBuckets, store_config
from esdb_gater.shared.models.schema import SchemaDef
from esdb_gater.shared.runtime.peers import Peers
from esdb_gater.shared.upcasting.registry import SchemaRegistry
from esdb_gater.shared.upcasting.steps import Schemas, TypeSchemas, check_chain, check_json_schema

__all__ = ["SchemaStore", "stored_doc"]

log = logging.getLogger(__name__)

CAS_ATTEMPTS: Final = 20


def stored_doc(t: TypeSchemas) -> dict[str, Any]:
    """The bucket's JSON form of a type's versions."""
    return {
        "event_type": t.event_type,
        "versions": {
            str(v): {**s.stored(), "registered_at": t.registered_at.get(v, 0)} for v, s in sorted(t.versions.items())
        },
    }


class SchemaStore:
    """Schema writes for every store; reads go through the registry, which watches the buckets."""

    def __init__(self, log: Log, subjects: Subjects, settings: Settings, registry: SchemaRegistry) -> None:
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.registry = registry
        self.buckets = StoreBuckets(  # dropped when idle
            log,
            subjects,
            settings,
            Peers(log.nc, subjects, timeout=settings.request_timeout_s),
            subjects.schema_bucket,
            "esdb-gater event schemas of store {store}",
        )

    async def _store(self, store: str) -> StoreConfig:
        """The store must exist (its event log) unless stores are created on first use; the
        schema bucket is created on first use either way."""
        return await self.buckets.for_write(store)

    async def schemas(self, store: str) -> Schemas:
        """The store's schemas as the registry holds them. A read creates nothing (ADR 0016):
        ``store_not_found`` when the store does not exist and stores are not created on first
        use; no schemas when it has no schema bucket yet."""
        if store not in self.buckets:
            await store_config(self.log, self.subjects, self.settings, store)
        return await self.registry.schemas(store)

    async def _read(self, store: str, event_type: str) -> tuple[TypeSchemas | None, int]:
        """The type's versions and the sequence to compare-and-set against (0: never written)."""
        bucket = self.subjects.schema_bucket(store)
        sm = await self.log.leader_get(
            self.subjects.kv_stream(bucket), {"last_by_subj": self.subjects.kv_subject(bucket, kv_token(event_type))}
        )
        if sm is None:
            return None, 0
        if is_deleted(sm):
            return None, sm.seq
        try:
            return TypeSchemas.from_stored(json.loads(sm.data)), sm.seq
        except Exception:
            log.warning("replacing a malformed schema document of %r in store %s", event_type, store)
            return None, sm.seq

    async def _write(self, store: str, event_type: str, t: TypeSchemas | None, seq: int) -> bool:
        """Compare-and-set the type's value (a delete marker when ``t`` is None); False when
        another writer came first."""
        bucket = self.subjects.schema_bucket(store)
        subject = self.subjects.kv_subject(bucket, kv_token(event_type))
        headers = {H_EXPECTED_LAST_SUBJECT_SEQ: str(seq)}
        payload = b""
        if t is None:
            headers[H_KV_OP] = "DEL"
        else:
            payload = json.dumps(stored_doc(t), ensure_ascii=False, separators=(",", ":")).encode()
        try:
            await self.log.publish(subject, payload, headers)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                return False
            raise
        await self.registry.refresh(store, event_type)
        return True

    async def register(self, store: str, event_type: str, schema: SchemaDef) -> TypeSchemas:
        """Add (or replace) one version; the resulting chain must have no gap."""
        await self._store(store)
        check_json_schema(schema.json_schema)
        limit = self.settings.quotas.schemas_per_store
        if limit > 0 and (await self._read(store, event_type))[0] is None:  # a new event type
            # counted from the bucket (the registry mirrors it), not from what this instance saw
            check_quota("schemas_per_store", limit, len((await self.registry.schemas(store)).types), store)
        now = time.time_ns() // 1_000_000
        for _ in range(CAS_ATTEMPTS):
            current, seq = await self._read(store, event_type)
            versions = dict(current.versions) if current else {}
            registered = dict(current.registered_at) if current else {}
            versions[schema.version] = schema
            registered[schema.version] = now
            check_chain(versions)
            t = TypeSchemas(event_type, versions, registered)
            if await self._write(store, event_type, t, seq):
                return t
        raise UnavailableError(
            "too many concurrent changes to this event type; try again", details={"event_type": event_type}
        )

    async def unregister(self, store: str, event_type: str, version: int | None) -> None:
        """Remove every version of a type, or one version (when the chain stays whole). Removing
        something that is not registered is fine (and creates nothing)."""
        if store not in self.buckets and event_type not in (await self.schemas(store)).types:
            return
        await self._store(store)
        for _ in range(CAS_ATTEMPTS):
            current, seq = await self._read(store, event_type)
            if current is None or (version is not None and version not in current.versions):
                return
            t: TypeSchemas | None = None
            if version is not None and len(current.versions) > 1:
                versions = {v: s for v, s in current.versions.items() if v != version}
                try:
                    check_chain(versions)
                except InvalidRequestError as exc:
                    raise InvalidRequestError(
                        f"removing version {version} would leave a gap in the upcaster chain",
                        details={**exc.details, "field": "version", "version": version},
                    ) from None
                registered = {v: r for v, r in current.registered_at.items() if v != version}
                t = TypeSchemas(event_type, versions, registered)
            if await self._write(store, event_type, t, seq):
                return
        raise UnavailableError(
            "too many concurrent changes to this event type; try again", details={"event_type": event_type}
        )
