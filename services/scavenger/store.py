"""JetStream side of the scavenger (docs/adr/0011-scavenging.md).

* Removal is per commit (one JetStream message per append, ADR 0002): ``STREAM.PURGE`` with
  ``{"filter": <the stream's subject>, "seq": S}`` removes that stream's commits below store
  position ``S`` in one atomic request. ``S`` is never past the stream's last commit, so
  ``version`` (read from the last commit's headers) never changes.
* Archives: the Object Store bucket ``<prefix>-archive-<store>``, one object per scavenge,
  written completely before anything is purged (format in docs/api/scavenger.md#archive-format).
* Versions, positions and stream lists come from the stream service's public API; snapshots
  from the snapshot service's (``snapshot.list``).
* Retention policies: the KV bucket ``<prefix>-scavenger``, keys ``policy.<store>.<key>``, and the
  scheduler's lease ``lease.scheduler``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import Any, Final

import msgpack
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NotFoundError as JsNotFoundError

from shared.errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    StreamNotFoundError,
    UnavailableError,
)
from shared.eventlog import Commit, CorruptEntryError, commit_of, decode_commit
from shared.jetstream import ERR_STREAM_NOT_FOUND, JS_BATCH_LIMIT, JetStreamApiError, Log, StoredMsg, kv_values, open_kv
from shared.peers import Peers
from shared.settings import Settings
from shared.stores import store_config
from shared.subjects import Subjects, kv_token

__all__ = ["ARCHIVE_FORMAT", "ScavengeStore", "policy_key"]

ARCHIVE_FORMAT: Final = "esdb-gater.archive"
ARCHIVE_VERSION: Final = 1


def policy_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ScavengeStore:
    def __init__(self, nc: Client, log: Log, subjects: Subjects, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.peers = Peers(nc, subjects, timeout=settings.request_timeout_s)
        self.kv: Any = None
        self._replicas: dict[str, tuple[int, str]] = {}

    async def open(self) -> None:
        bucket = self.subjects.scavenger_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater retention policies")
        )

    # --- the log ------------------------------------------------------------------------------
    async def ensure_store(self, store: str) -> None:
        """``store_not_found`` unless the store exists."""
        await self._store_cfg(store)

    async def _store_cfg(self, store: str) -> tuple[int, str]:
        """(replicas, storage) of the store's log; ``store_not_found`` when it has none."""
        cfg = self._replicas.get(store)
        if cfg is None:
            found = await store_config(self.log, self.subjects, None, store)
            cfg = (found.replicas, found.storage)
            self._replicas[store] = cfg
        return cfg

    async def _get(self, store: str, req: dict[str, Any]) -> StoredMsg | None:
        replicas, _ = await self._store_cfg(store)
        name = self.subjects.log_stream(store)
        if replicas > 1:  # a follower may not have the newest commit yet
            return await self.log.leader_get(name, req)
        return await self.log.direct_get(name, req)

    @staticmethod
    def _commit(sm: StoredMsg) -> Commit:
        """``commit_of``, refusing (``invalid_request``, ``details.reason = "corrupt_entry"``)
        to plan around a message someone else published into the log (ADR 0013): nothing is
        archived or purged."""
        try:
            return commit_of(sm)
        except CorruptEntryError:
            raise InvalidRequestError(
                f"the log holds a message that is not a commit at position {sm.seq}; not scavenging this stream",
                details={"field": "stream_id", "reason": "corrupt_entry", "position": sm.seq},
            ) from None

    async def head(self, store: str, stream_id: str) -> Commit:
        sm = await self._get(store, {"last_by_subj": self.subjects.log_subject(store, stream_id)})
        if sm is None:
            raise StreamNotFoundError(f"stream {stream_id!r} not found", details={"stream_id": stream_id})
        return self._commit(sm)

    async def first(self, store: str, stream_id: str) -> Commit | None:
        sm = await self._get(store, {"seq": 1, "next_by_subj": self.subjects.log_subject(store, stream_id)})
        return self._commit(sm) if sm is not None else None

    async def commit_at(self, store: str, seq: int) -> Commit | None:
        sm = await self._get(store, {"seq": seq})
        return self._commit(sm) if sm is not None else None

    async def replicas(self, store: str) -> int:
        replicas, _ = await self._store_cfg(store)
        return replicas

    async def commits(
        self, store: str, stream_id: str, from_seq: int, below_seq: int, *, leader: bool = False
    ) -> list[StoredMsg]:
        """The stream's commits with from_seq <= position < below_seq, in order: batched Direct
        Gets (any replica may answer, a lagging follower short), or with ``leader`` one
        ``STREAM.MSG.GET`` per commit from the stream leader (replicated stores; ADR 0017)."""
        name = self.subjects.log_stream(store)
        subject = self.subjects.log_subject(store, stream_id)
        out: list[StoredMsg] = []
        seq = from_seq
        if leader:
            while seq < below_seq:
                sm = await self.log.leader_get(name, {"seq": seq, "next_by_subj": subject})
                if sm is None or sm.seq >= below_seq:
                    break
                out.append(sm)
                seq = sm.seq + 1
            return out
        while seq < below_seq:
            batch, _ = await self.log.direct_batch(
                name, {"seq": seq, "batch": JS_BATCH_LIMIT, "next_by_subj": subject, "max_bytes": 8 * 1024 * 1024}
            )
            batch = [sm for sm in batch if sm.seq < below_seq]
            if not batch:
                break
            out.extend(batch)
            seq = batch[-1].seq + 1
        return out

    @staticmethod
    def events_of(commits: list[StoredMsg], stream_id: str) -> list[dict[str, Any]]:
        return [ev for sm in commits for ev in decode_commit(sm, stream_id)]

    async def purge_below(self, store: str, stream_id: str, seq: int) -> int:
        """Remove the stream's commits below position ``seq`` (one atomic request)."""
        reply = await self.log.api(
            f"$JS.API.STREAM.PURGE.{self.subjects.log_stream(store)}",
            {"filter": self.subjects.log_subject(store, stream_id), "seq": seq},
        )
        return int(reply.get("purged", 0))

    # --- the stream service ----------------------------------------------------------------------
    async def version_at(self, store: str, stream_id: str, epoch_us: int) -> int:
        reply = await self.peers.call(store, "stream", "version_at", {"stream_id": stream_id, "timestamp": epoch_us})
        return int(reply["version"])

    async def position_of(self, store: str, stream_id: str, version: int) -> int | None:
        """The position of the commit holding ``version`` (or the first one after it); None past the end."""
        reply = await self.peers.call(
            store, "stream", "read", {"stream_id": stream_id, "start_version": version, "count": 1, "raw": True}
        )
        events = reply.get("events") or []
        return int(events[0]["position"]) if events else None

    async def stream_ids(self, store: str) -> list[str]:
        out: list[str] = []
        cursor: str | None = None
        while True:
            body: dict[str, Any] = {"limit": 10_000}
            if cursor is not None:
                body["cursor"] = cursor
            reply = await self.peers.call(store, "stream", "list", body)
            out.extend(reply["streams"])
            cursor = reply.get("next")
            if cursor is None:
                return out

    # --- snapshots ---------------------------------------------------------------------------------
    async def latest_snapshot_version(self, store: str, stream_id: str) -> int | None:
        """The highest version of any snapshot whose ``stream_uuid`` is the stream id (any
        ``source_uuid``), asked of the snapshot service: ``snapshot.list {stream_uuid,
        include_data: false}``. A snapshot service that still requires ``source_uuid`` (or none
        running) is read through its documented KV layout instead."""
        try:
            reply = await self.peers.call(store, "snapshot", "list", {"stream_uuid": stream_id, "include_data": False})
        except (InvalidRequestError, UnavailableError):
            return await self._latest_snapshot_from_bucket(store, stream_id)
        versions = [int(s["version"]) for s in reply.get("snapshots") or [] if s.get("stream_uuid") == stream_id]
        return max(versions) if versions else None

    async def _latest_snapshot_from_bucket(self, store: str, stream_id: str) -> int | None:
        """Keys ``<kv_token(source)>.<kv_token(stream)>.<version, 20 digits>`` of the bucket
        ``<prefix>-snap-<store>`` (docs/adr/0005-snapshots.md)."""
        bucket = self.subjects.snapshot_bucket(store)
        pattern = self.subjects.kv_subject(bucket, f"*.{kv_token(stream_id)}.*")
        try:
            si = await self.log.api(
                f"$JS.API.STREAM.INFO.{self.subjects.kv_stream(bucket)}", {"subjects_filter": pattern}
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise
        subjects = si.get("state", {}).get("subjects") or {}
        versions = []
        for s in subjects:
            tail = s.rsplit(".", 1)[-1]
            if tail.isdigit():
                versions.append(int(tail))
        return max(versions) if versions else None

    # --- archives ---------------------------------------------------------------------------------
    async def _objects(self, store: str, create: bool) -> Any:
        bucket = self.subjects.archive_bucket(store)
        try:
            return await self.js.object_store(bucket)
        except BucketNotFoundError:
            if not create:
                return None
        replicas, storage = await self._store_cfg(store)
        cfg = ObjectStoreConfig(
            bucket=bucket,
            description=f"esdb-gater scavenge archives of store {store}",
            storage=StorageType.MEMORY if storage == "memory" else StorageType.FILE,
            replicas=replicas,
        )
        try:
            return await self.js.create_object_store(bucket, cfg)
        except Exception:
            return await self.js.object_store(bucket)  # created meanwhile by another instance

    async def write_archive(
        self, store: str, key: str, stream_id: str, versions: tuple[int, int], events: list[dict[str, Any]]
    ) -> None:
        doc = {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "store": store,
            "stream_id": stream_id,
            "created_at": time.time_ns() // 1_000_000,
            "deleted_versions": list(versions),
            "event_count": len(events),
            "events": events,
        }
        obj = await self._objects(store, create=True)
        await obj.put(key, msgpack.packb(doc, use_bin_type=True))

    async def read_archive(self, store: str, key: str) -> dict[str, Any]:
        await self._store_cfg(store)
        obj = await self._objects(store, create=False)
        if obj is None:
            raise NotFoundError(f"no archive {key!r}", details={"archive_key": key})
        try:
            result = await obj.get(key)
        except JsNotFoundError:
            raise NotFoundError(f"no archive {key!r}", details={"archive_key": key}) from None
        except GatewayError:
            raise
        except Exception as exc:  # deleted object, bad meta: the key names no readable archive
            if type(exc).__name__ in ("ObjectNotFoundError", "ObjectDeletedError", "BadObjectMetaError"):
                raise NotFoundError(f"no archive {key!r}", details={"archive_key": key}) from None
            raise
        doc: dict[str, Any] = msgpack.unpackb(result.data, raw=False)
        if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_FORMAT:
            raise NotFoundError(f"{key!r} is not a scavenge archive", details={"archive_key": key})
        return doc

    # --- policies ---------------------------------------------------------------------------------
    @staticmethod
    def policy_kv_key(store: str, name: str) -> str:
        return f"policy.{store}.{policy_key(name)}"

    @staticmethod
    def scheduler_lease_key() -> str:
        return "lease.scheduler"

    async def get_policy(self, store: str, name: str) -> tuple[dict[str, Any], int]:
        try:
            entry = await self.kv.get(self.policy_kv_key(store, name))
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise NotFoundError(f"no retention policy named {name!r}", details={"name": name})
        return json.loads(entry.value), int(entry.revision)

    async def upsert_policy(self, store: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a policy's settings, keeping its history (compare-and-set)."""
        now = time.time_ns() // 1_000_000
        for _ in range(20):
            try:
                old: dict[str, Any] | None
                old, rev = await self.get_policy(store, fields["name"])
            except NotFoundError:
                old, rev = None, 0
            doc = {
                "runs": 0,
                "total_deleted": 0,
                "last_run": None,
                **{k: v for k, v in (old or {}).items() if k in ("runs", "total_deleted", "last_run")},
                **fields,
                "created_at": old["created_at"] if old else now,
                "updated_at": now,
            }
            raw = json.dumps(doc, ensure_ascii=False).encode()
            key = self.policy_kv_key(store, fields["name"])
            try:
                if old is None:
                    await self.kv.create(key, raw)
                else:
                    await self.kv.update(key, raw, last=rev)
                return doc
            except KeyWrongLastSequenceError:
                continue
        raise UnavailableError("the policy changed too often to update it; try again", details={"name": fields["name"]})

    async def put_policy(self, store: str, doc: dict[str, Any], last: int | None) -> int:
        """Write a policy; ``last`` = the revision it must still have (None: create or replace)."""
        key = self.policy_kv_key(store, doc["name"])
        raw = json.dumps(doc, ensure_ascii=False).encode()
        if last is None:
            return int(await self.kv.put(key, raw))
        return int(await self.kv.update(key, raw, last=last))

    async def delete_policy(self, store: str, name: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.delete(self.policy_kv_key(store, name))

    async def policies(self, store: str | None = None) -> list[tuple[str, dict[str, Any], int]]:
        """(store, policy, revision) of every policy (of one store)."""
        rows = await kv_values(self.log, self.subjects.scavenger_bucket(), f"policy.{store}.>" if store else "policy.>")
        return [(r.key.split(".")[1], json.loads(r.value), r.revision) for r in rows]
