"""Snapshots on JetStream: the only module of the snapshot service that talks to JetStream.

Layout (docs/adr/0005-snapshots.md):

* one KV bucket per store, ``<prefix>-snap-<store>`` (stream ``KV_<bucket>``, history 1, direct
  gets), one key per snapshot: ``<source>.<stream>.<version>``, where ``<source>`` and
  ``<stream>`` are ``kv_token`` encodings of the uuids (injective, never a ``.``, ``*`` or ``>``)
  and ``<version>`` is 20 zero-padded digits. The value is a msgpack map (``_encode``);
* ``latest`` and ``list`` list the keys of one (source, stream) with ``STREAM.INFO`` and a
  subject filter (one request, O(snapshots of that stream)), then read the values with one
  batched Direct Get; a deleted snapshot's subject is purged, so it is simply absent;
* snapshots bigger than one message: one Object Store bucket per store, ``<prefix>-snapobj-<store>``,
  written in the ADR-20 format as the caller's chunks arrive (one chunk message per request, in
  order, checked with ``Nats-Expected-Last-Subject-Sequence``), then the object's meta message and
  a small KV value pointing at it, with the sequence of every chunk so ``read_chunk`` is one Direct
  Get. Any Object Store client can read the object (its name is the KV key).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgpack

from esdb_gater.shared.core.errors import InvalidRequestError, NotFoundError
from esdb_gater.shared.core.settings import Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import (
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    JetStreamApiError,
    Log,
    StoredMsg,
    consistent_get,
    create_stream,
)
from esdb_gater.shared.log.kv import last_msgs, snapshot_key, snapshot_keys, snapshot_version, stream_subjects
from esdb_gater.shared.log.quotas import IdleMap
from esdb_gater.shared.log.stores import STORE_METADATA, StoreBuckets
from esdb_gater.shared.runtime.peers import Peers

__all__ = ["ChunkResult", "SnapshotStore", "Upload"]

log = logging.getLogger(__name__)

H_ROLLUP: Final = "Nats-Rollup"
H_CHUNK: Final = "Esdb-Chunk"
H_CHUNKS: Final = "Esdb-Chunks"
JSON_CT: Final = "application/json"


@dataclass(slots=True, frozen=True)
class Upload:
    """One chunk of a chunked ``record`` and the snapshot it belongs to."""

    source: str
    stream: str
    version: int
    upload_id: str
    index: int
    count: int
    chunk: bytes
    metadata: dict[str, Any]
    content_type: str


@dataclass(slots=True, frozen=True)
class ChunkResult:
    complete: bool
    received: int
    row: dict[str, Any] | None  # the stored snapshot (without data) once complete


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode(row: dict[str, Any], data: Any, obj: dict[str, Any] | None) -> bytes:
    """The KV value: ``s``/``u`` uuids, ``v`` version, ``t`` ms, ``m`` metadata, ``c`` content
    type (when not JSON), and ``d`` data (plain) or ``o`` the object and ``n`` its size (chunked).
    A plain snapshot's size is the size of this value."""
    value: dict[str, Any] = {
        "s": row["source_uuid"],
        "u": row["stream_uuid"],
        "v": row["version"],
        "t": row["timestamp"],
        "m": row["metadata"],
    }
    if row["data_content_type"] != JSON_CT:
        value["c"] = row["data_content_type"]
    if obj is None:
        value["d"] = data
    else:
        value["o"] = obj
        value["n"] = row["size"]
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _decode(sm: StoredMsg, include_data: bool = True) -> dict[str, Any]:
    """A Snapshot-shaped dict from a KV message."""
    value = msgpack.unpackb(sm.data, raw=False)
    obj = value.get("o")
    chunks = None
    if obj is not None:
        chunks = {"upload_id": obj["id"], "count": obj["count"], "size": value["n"], "digest": obj["digest"]}
    return {
        "source_uuid": value["s"],
        "stream_uuid": value["u"],
        "version": value["v"],
        "data": value.get("d") if include_data else None,
        "metadata": value.get("m", {}),
        "timestamp": value["t"],
        "data_content_type": value.get("c", JSON_CT),
        "size": value.get("n", len(sm.data)),
        "chunks": chunks,
    }


def _object_of(sm: StoredMsg) -> dict[str, Any] | None:
    obj: dict[str, Any] | None = msgpack.unpackb(sm.data, raw=False).get("o")
    return obj


class SnapshotStore:
    """Snapshots of every store, over one NATS connection."""

    def __init__(self, log: Log, subjects: Subjects, settings: Settings) -> None:
        self.log = log
        self.subjects = subjects
        self.settings = settings
        # per-store state, dropped when idle (ADR 0016)
        self.buckets = StoreBuckets(
            log,
            subjects,
            settings,
            Peers(log.nc, subjects, timeout=settings.request_timeout_s),
            subjects.snapshot_bucket,
            "esdb-gater snapshots of store {store}",
        )
        self._objects_ready: IdleMap[str, bool] = IdleMap(settings.quotas.idle_evict_s)

    # --- buckets ----------------------------------------------------------------------------
    async def _store(self, store: str) -> StoreConfig:
        """The store must exist (its event log, ``<prefix>-log-<store>``) unless stores are
        created on first use; the snapshot bucket is created on first use either way."""
        return await self.buckets.for_write(store)

    async def _existing(self, store: str) -> StoreConfig | None:
        """For reads, which create nothing (ADR 0016): the snapshot bucket's replicas and storage,
        or None when the store has no snapshot bucket (nothing was ever recorded);
        ``store_not_found`` when the store does not exist and stores are not created on first use."""
        return await self.buckets.for_read(store)

    async def _objects(self, store: str) -> str:
        """The store's Object Store bucket (created on the first chunked upload)."""
        bucket = self.subjects.snapshot_objects(store)
        if store in self._objects_ready:
            return bucket
        cfg = await self._store(store)
        await create_stream(  # one that exists already (maybe with other limits) is used as it is
            self.log,
            {
                "name": self.subjects.obj_stream(bucket),
                "description": f"esdb-gater large snapshots of store {store}",
                "subjects": self.subjects.obj_all(bucket),
                "retention": "limits",
                "max_msgs": -1,
                "max_bytes": -1,
                "max_age": 0,
                "max_consumers": -1,
                "discard": "new",
                "storage": cfg.storage,
                "num_replicas": cfg.replicas,
                "allow_rollup_hdrs": True,
                "allow_direct": True,
                "metadata": {STORE_METADATA: store},
            },
        )
        self._objects_ready.add(store)
        return bucket

    # --- keys -------------------------------------------------------------------------------
    def _bucket(self, store: str) -> str:
        return self.subjects.snapshot_bucket(store)

    def _key(self, source: str, stream: str, version: int) -> str:
        return snapshot_key(source, stream, version)

    def _subject(self, store: str, source: str, stream: str, version: int) -> str:
        return self.subjects.kv_subject(self._bucket(store), self._key(source, stream, version))

    async def _versions(self, store: str, source: str, stream: str) -> list[int]:
        """The versions stored for (source, stream), ascending: one STREAM.INFO per 100 000."""
        bucket = self._bucket(store)
        listing = await stream_subjects(
            self.log, self.subjects.kv_stream(bucket), self.subjects.kv_subject(bucket, snapshot_keys(source, stream))
        )
        found = (snapshot_version(s) for s in (listing.subjects if listing is not None else []))
        return sorted(v for v in found if v is not None)

    async def _get(self, store: str, subject: str) -> StoredMsg | None:
        cfg = await self._existing(store)
        if cfg is None:
            return None
        # a follower may not have the latest write yet
        return await consistent_get(
            self.log, self.subjects.kv_stream(self._bucket(store)), {"last_by_subj": subject}, cfg.replicas
        )

    # --- plain snapshots --------------------------------------------------------------------
    async def record(
        self,
        store: str,
        source: str,
        stream: str,
        version: int,
        data: Any,
        metadata: dict[str, Any],
        content_type: str,
    ) -> dict[str, Any]:
        await self._store(store)
        key = self._key(source, stream, version)
        row = {
            "source_uuid": source,
            "stream_uuid": stream,
            "version": version,
            "metadata": metadata,
            "timestamp": _now_ms(),
            "data_content_type": content_type,
            "size": 0,
        }
        payload = _encode(row, data, None)
        row["size"] = len(payload)
        old = await self._object_info(store, key)
        await self.log.publish(self.subjects.kv_subject(self._bucket(store), key), payload, {})
        if old is not None:
            await self._drop_object(store, key, old)
        return row

    async def read(self, store: str, source: str, stream: str, version: int | None) -> dict[str, Any]:
        """The snapshot at ``version``, or the highest one when ``version`` is None."""
        if await self._existing(store) is None:
            wanted: int | str = "latest" if version is None else version
            raise NotFoundError(
                "no snapshot for this source and stream",
                details={"source_uuid": source, "stream_uuid": stream, "version": wanted},
            )
        if version is None:
            versions = await self._versions(store, source, stream)
            if not versions:
                raise NotFoundError(
                    "no snapshot for this source and stream",
                    details={"source_uuid": source, "stream_uuid": stream, "version": "latest"},
                )
            version = versions[-1]
        sm = await self._get(store, self._subject(store, source, stream, version))
        if sm is None:
            raise NotFoundError(
                f"no snapshot at version {version}",
                details={"source_uuid": source, "stream_uuid": stream, "version": version},
            )
        return _decode(sm)

    async def list(self, store: str, source: str, stream: str, include_data: bool) -> list[dict[str, Any]]:
        if await self._existing(store) is None:
            return []
        versions = await self._versions(store, source, stream)
        subjects = [self._subject(store, source, stream, v) for v in versions]
        msgs = await last_msgs(self.log, self.subjects.kv_stream(self._bucket(store)), subjects)
        rows = [_decode(sm, include_data) for sm in msgs]
        rows.sort(key=lambda r: int(r["version"]))
        return rows

    async def delete(self, store: str, source: str, stream: str, version: int) -> None:
        """Remove a snapshot; removing a missing one is fine (and creates nothing)."""
        if await self._existing(store) is None:
            return
        key = self._key(source, stream, version)
        bucket = self._bucket(store)
        old = await self._object_info(store, key)
        await self.log.api(
            f"$JS.API.STREAM.PURGE.{self.subjects.kv_stream(bucket)}",
            {"filter": self.subjects.kv_subject(bucket, key)},
        )
        if old is not None:
            await self._drop_object(store, key, old)

    # --- chunked snapshots ------------------------------------------------------------------
    def _nuid(self, key: str, upload_id: str) -> str:
        """The object's chunk-subject token: one per (snapshot, upload), so two snapshots that
        happen to use the same upload id never share chunks."""
        return hashlib.sha256(f"{key}\n{upload_id}".encode()).hexdigest()[:32]

    async def _object_info(self, store: str, key: str) -> dict[str, Any] | None:
        """The ADR-20 meta of the object stored for ``key``, if any (not deleted). One request,
        also when the store has no Object Store bucket yet."""
        bucket = self.subjects.snapshot_objects(store)
        try:
            sm = await self.log.leader_get(
                self.subjects.obj_stream(bucket), {"last_by_subj": self.subjects.obj_meta(bucket, key)}
            )
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            return None
        if sm is None:
            return None
        info: dict[str, Any] = json.loads(sm.data)
        return None if info.get("deleted") else info

    async def _drop_object(self, store: str, key: str, info: dict[str, Any], keep_nuid: str | None = None) -> None:
        bucket = self.subjects.snapshot_objects(store)
        stream = self.subjects.obj_stream(bucket)
        nuid = str(info.get("nuid", ""))
        if nuid and nuid != keep_nuid:
            await self.log.api(f"$JS.API.STREAM.PURGE.{stream}", {"filter": self.subjects.obj_chunks(bucket, nuid)})
        if keep_nuid is None:
            await self.log.api(f"$JS.API.STREAM.PURGE.{stream}", {"filter": self.subjects.obj_meta(bucket, key)})

    async def record_chunk(self, store: str, up: Upload) -> ChunkResult:
        """Store chunk ``index`` of ``count``; the last one completes the snapshot. Chunks must
        come in order, each after the previous one was acknowledged; a chunk that is already
        stored (a resend) is acknowledged again without storing it twice."""
        bucket = await self._objects(store)
        key = self._key(up.source, up.stream, up.version)
        nuid = self._nuid(key, up.upload_id)
        index, count = up.index, up.count
        subject = self.subjects.obj_chunks(bucket, nuid)
        stream_name = self.subjects.obj_stream(bucket)
        for _ in range(5):
            last = await self.log.leader_get(stream_name, {"last_by_subj": subject})
            last_index = int(last.headers.get(H_CHUNK, "-1")) if last is not None else -1
            if last is not None and int(last.headers.get(H_CHUNKS, "0")) != count:
                raise InvalidRequestError(
                    f"chunk_count {count} differs from the {last.headers.get(H_CHUNKS)} of this upload's first chunk",
                    details={"field": "chunk_count", "reason": "changed during the upload"},
                )
            if index <= last_index:
                if last_index == count - 1 and index < count - 1:
                    raise InvalidRequestError(
                        "this upload_id was already used for a completed upload; choose a new one",
                        details={"field": "upload_id", "reason": "already used"},
                    )
                if index == count - 1:  # a resend of the last chunk: complete the snapshot if needed
                    return await self._finish(store, key, nuid, up)
                return ChunkResult(False, last_index + 1, None)
            if index != last_index + 1:
                raise InvalidRequestError(
                    f"chunk {index} out of order: the next chunk of this upload is {last_index + 1}",
                    details={"field": "chunk_index", "reason": "out of order", "expected": last_index + 1},
                )
            headers = {
                H_CHUNK: str(index),
                H_CHUNKS: str(count),
                H_EXPECTED_LAST_SUBJECT_SEQ: str(last.seq if last else 0),
            }
            try:
                await self.log.publish(subject, up.chunk, headers)
            except JetStreamApiError as exc:
                if exc.err_code == ERR_WRONG_LAST_SEQUENCE:  # the same chunk raced in: look again
                    continue
                raise
            if index == count - 1:
                return await self._finish(store, key, nuid, up)
            return ChunkResult(False, index + 1, None)
        raise InvalidRequestError(
            "chunks of this upload are being sent concurrently; send them one after another",
            details={"field": "chunk_index", "reason": "concurrent chunks"},
        )

    async def _finish(self, store: str, key: str, nuid: str, up: Upload) -> ChunkResult:
        """All chunks are stored: hash them, write the object's meta and the KV pointer."""
        source, stream, version, upload_id, count = up.source, up.stream, up.version, up.upload_id, up.count
        kv_subject = self._subject(store, source, stream, version)
        current = await self._get(store, kv_subject)
        if current is not None:
            obj = _object_of(current)
            if obj is not None and obj.get("id") == upload_id:  # finished before (a resend)
                row = _decode(current, include_data=False)
                return ChunkResult(True, count, row)
        bucket = self.subjects.snapshot_objects(store)
        stream_name = self.subjects.obj_stream(bucket)
        subject = self.subjects.obj_chunks(bucket, nuid)
        digest = hashlib.sha256()
        seqs: list[int] = []
        size = 0
        next_seq = 1
        while len(seqs) < count:
            msgs, _ = await self.log.direct_batch(
                stream_name,
                {"seq": next_seq, "next_by_subj": subject, "batch": count - len(seqs), "max_bytes": 16 * 1024 * 1024},
            )
            if not msgs:
                break
            for sm in msgs:
                if int(sm.headers.get(H_CHUNK, "-1")) != len(seqs):
                    raise InvalidRequestError(
                        "the stored chunks of this upload are not in order; upload again with a new upload_id",
                        details={"field": "upload_id", "reason": "broken upload"},
                    )
                digest.update(sm.data)
                size += len(sm.data)
                seqs.append(sm.seq)
            next_seq = msgs[-1].seq + 1
        if len(seqs) != count:
            raise InvalidRequestError(
                f"only {len(seqs)} of {count} chunks are stored; upload again with a new upload_id",
                details={"field": "upload_id", "reason": "incomplete upload"},
            )
        now = _now_ms()
        digest_text = "SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode("ascii")
        old = await self._object_info(store, key)
        info = {
            "name": key,
            "description": f"snapshot {source!r} {stream!r} version {version}",
            "headers": {"Esdb-Upload": [upload_id]},
            "options": {"max_chunk_size": max(1, size // max(count, 1))},
            "bucket": bucket,
            "nuid": nuid,
            "size": size,
            "chunks": count,
            "mtime": datetime.fromtimestamp(now / 1000, UTC).isoformat().replace("+00:00", "Z"),
            "digest": digest_text,
        }
        await self.log.publish(self.subjects.obj_meta(bucket, key), json.dumps(info).encode(), {H_ROLLUP: "sub"})
        row = {
            "source_uuid": source,
            "stream_uuid": stream,
            "version": version,
            "metadata": up.metadata,
            "timestamp": now,
            "data_content_type": up.content_type,
            "size": size,
        }
        obj = {"id": upload_id, "nuid": nuid, "count": count, "digest": digest_text, "seqs": seqs}
        await self.log.publish(kv_subject, _encode(row, None, obj), {})
        if old is not None:
            await self._drop_object(store, key, old, keep_nuid=nuid)
        row["data"] = None
        row["chunks"] = {"upload_id": upload_id, "count": count, "size": size, "digest": digest_text}
        return ChunkResult(True, count, row)

    async def read_chunk(self, store: str, source: str, stream: str, version: int, upload_id: str, index: int) -> bytes:
        cfg = await self._existing(store) or StoreConfig()
        sm = await self._get(store, self._subject(store, source, stream, version))
        obj = _object_of(sm) if sm is not None else None
        details = {"source_uuid": source, "stream_uuid": stream, "version": version, "upload_id": upload_id}
        if obj is None or obj.get("id") != upload_id:
            raise NotFoundError(
                "no chunked snapshot with this upload_id at this version (recorded again or deleted?); read it again",
                details=details,
            )
        seqs: list[int] = obj["seqs"]
        if index >= len(seqs):
            raise InvalidRequestError(
                f"chunk_index {index} is past the last chunk ({len(seqs) - 1})",
                details={"field": "chunk_index", "reason": "out of range", "count": len(seqs)},
            )
        bucket = self.subjects.snapshot_objects(store)
        chunk = await self.log.direct_get(self.subjects.obj_stream(bucket), {"seq": seqs[index]})
        for _ in range(50):  # with replicas, a follower may answer before it has the chunk
            if chunk is not None or cfg.replicas == 1:
                break
            await asyncio.sleep(0.01)
            chunk = await self.log.direct_get(self.subjects.obj_stream(bucket), {"seq": seqs[index]})
        if chunk is None or chunk.subject != self.subjects.obj_chunks(bucket, obj["nuid"]):
            raise NotFoundError(
                "the snapshot's chunks are gone (recorded again or deleted?); read it again", details=details
            )
        return chunk.data
