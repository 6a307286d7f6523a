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

from esdb_gater.shared.core.errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    StreamNotFoundError,
    UnavailableError,
)
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import Commit, CorruptEntryError, commit_of, decode_commit
from esdb_gater.shared.log.jetstream import (
    JS_BATCH_LIMIT,
    Log,
    StoredMsg,
    consistent_get,
    open_kv,
)
from esdb_gater.shared.log.kv import kv_values, snapshot_keys, snapshot_version, stream_subjects
from esdb_gater.shared.log.port import MsgGet
from esdb_gater.shared.log.stores import StoreConfigs
from esdb_gater.shared.models.peer_ops import (
    SNAPSHOT_LIST_STREAM,
    STREAM_LIST,
    STREAM_READ,
    STREAM_VERSION_AT,
    StreamSnapshotsRequest,
)
from esdb_gater.shared.models.stream import ListRequest, ReadRequest, VersionAtRequest
from esdb_gater.shared.runtime.peers import Peers, make_request

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
        self.configs = StoreConfigs(log, subjects, settings.quotas.idle_evict_s)  # dropped when idle

    async def open(self) -> None:
        bucket = self.subjects.scavenger_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater retention policies")
        )

    # --- the log ------------------------------------------------------------------------------
    async def ensure_store(self, store: str) -> None:
        """``store_not_found`` unless the store exists."""
        await self.configs.get(store)

    async def _get(self, store: str, req: MsgGet) -> StoredMsg | None:
        """A follower may not have the newest commit yet: the leader answers on replicated stores."""
        return await consistent_get(self.log, self.subjects.log_stream(store), req, await self.replicas(store))

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
        return (await self.configs.get(store)).replicas

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
        request = make_request(VersionAtRequest, stream_id=stream_id, timestamp=epoch_us)
        return (await self.peers.call(store, STREAM_VERSION_AT, request)).version

    async def position_of(self, store: str, stream_id: str, version: int) -> int | None:
        """The position of the commit holding ``version`` (or the first one after it); None past the end."""
        request = make_request(ReadRequest, stream_id=stream_id, start_version=version, count=1, raw=True)
        reply = await self.peers.call(store, STREAM_READ, request)
        return reply.events[0].position if reply.events else None

    async def stream_ids(self, store: str) -> list[str]:
        out: list[str] = []
        cursor: str | None = None
        while True:
            request = ListRequest(limit=10_000) if cursor is None else ListRequest(limit=10_000, cursor=cursor)
            reply = await self.peers.call(store, STREAM_LIST, request)
            out.extend(reply.streams)
            cursor = reply.next
            if cursor is None:
                return out

    # --- snapshots ---------------------------------------------------------------------------------
    async def latest_snapshot_version(self, store: str, stream_id: str) -> int | None:
        """The highest version of any snapshot whose ``stream_uuid`` is the stream id (any
        ``source_uuid``), asked of the snapshot service: ``snapshot.list {stream_uuid,
        include_data: false}``. A snapshot service that still requires ``source_uuid`` (or none
        running) is read through its documented KV layout instead."""
        try:
            request = StreamSnapshotsRequest(stream_uuid=stream_id, include_data=False)
            reply = await self.peers.call(store, SNAPSHOT_LIST_STREAM, request)
        except (InvalidRequestError, UnavailableError):
            return await self._latest_snapshot_from_bucket(store, stream_id)
        versions = [s.version for s in reply.snapshots if s.stream_uuid == stream_id]
        return max(versions) if versions else None

    async def _latest_snapshot_from_bucket(self, store: str, stream_id: str) -> int | None:
        """Keys ``<kv_token(source)>.<kv_token(stream)>.<version, 20 digits>`` of the bucket
        ``<prefix>-snap-<store>`` (docs/adr/0005-snapshots.md)."""
        bucket = self.subjects.snapshot_bucket(store)
        pattern = self.subjects.kv_subject(bucket, snapshot_keys(None, stream_id))
        listing = await stream_subjects(self.log, self.subjects.kv_stream(bucket), pattern)
        versions = [v for v in map(snapshot_version, listing.subjects if listing is not None else []) if v is not None]
        return max(versions) if versions else None

    # --- archives ---------------------------------------------------------------------------------
    async def _objects(self, store: str, create: bool) -> Any:
        bucket = self.subjects.archive_bucket(store)
        try:
            return await self.js.object_store(bucket)
        except BucketNotFoundError:
            if not create:
                return None
        placement = await self.configs.get(store)
        cfg = ObjectStoreConfig(
            bucket=bucket,
            description=f"esdb-gater scavenge archives of store {store}",
            storage=StorageType.MEMORY if placement.storage == "memory" else StorageType.FILE,
            replicas=placement.replicas,
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
        await self.configs.get(store)
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
