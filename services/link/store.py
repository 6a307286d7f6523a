"""JetStream state of the link service (docs/adr/0010-links.md).

* Definitions, progress counters and driving leases: the KV bucket ``<prefix>-links``, keys
  ``def.<store>.<key>``, ``stat.<store>.<key>`` and ``lease.<store>.<key>`` (``key`` = hash of
  the link's name).
* Reading the source: each time an instance starts forwarding a link, it creates its own pull
  consumer on the store's log stream, ``link-<key>-<nonce>`` (in memory, removed by the server
  after 30 s without pulls), starting at the link's checkpoint. The checkpoint is the link's own
  KV entry ``ckpt.<store>.<key>`` (written after every append; ADR 0016), never the metadata of
  the derived stream's events. No two instances ever share a consumer, so neither can take
  appends from the other's sequence.
* Writing: through the stream service's services-only subject
  (``<prefix>.internal.<store>.stream.append``; clients may not write ``$`` streams), never to
  the log directly, so appends to ``$link:<name>`` get the stream service's checks, idempotency
  and indexes like any other append.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from esdb_gater.shared.core.errors import (
    AlreadyExistsError,
    GatewayError,
    NotFoundError,
    StreamNotFoundError,
)
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import decode_commit
from esdb_gater.shared.log.jetstream import (
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    Log,
    consumer_info,
    create_consumer,
    delete_consumer,
    open_kv,
)
from esdb_gater.shared.log.kv import kv_values
from esdb_gater.shared.log.lease import lease_holder
from esdb_gater.shared.log.quotas import check_quota
from esdb_gater.shared.log.stores import KnownStores, last_position
from esdb_gater.shared.models.link import CreateLinkRequest, derived_stream
from esdb_gater.shared.models.peer_ops import STREAM_APPEND, STREAM_DELETE, STREAM_FORWARD, STREAM_VERSION
from esdb_gater.shared.models.stream import (
    AppendRequest,
    AppendResponse,
    DeleteRequest,
    ForwardRequest,
    VersionRequest,
)
from esdb_gater.shared.runtime.peers import Peers, make_request

__all__ = ["Checkpoint", "Definition", "LinkStore", "Stats", "link_key"]


def link_key(name: str) -> str:
    """Stable id of a link name: safe in subjects, KV keys and consumer names."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Definition:
    """What ``create`` stored, and the wanted state (``status``)."""

    store: str
    key: str
    name: str
    source: dict[str, Any]
    filter: dict[str, Any] | None
    transform: dict[str, Any] | None
    backfill: bool
    created_at: int
    status: str = "stopped"  # running | stopped | error
    error: str | None = None
    start_seq: int = 1  # where the source is read from the first time (after the log's end without backfill)

    @property
    def stream_id(self) -> str:
        return derived_stream(self.name)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Definition:
        d = json.loads(raw)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far the link has copied, as the link itself recorded it (KV ``ckpt.<store>.<key>``):
    the last source event copied (``pos`` = its append's store position, ``ver`` = its version)
    and the derived stream's version right after that append (``link_version``)."""

    pos: int
    ver: int
    link_version: int

    def to_json(self) -> bytes:
        return json.dumps({"pos": self.pos, "ver": self.ver, "link_version": self.link_version}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Checkpoint:
        d = json.loads(raw)
        return cls(int(d["pos"]), int(d["ver"]), int(d["link_version"]))


@dataclass
class Stats:
    """Progress counters, written by the driving instance after each batch. ``pos`` is the
    store position of the last source append counted, so a batch processed again after a crash
    is not counted twice."""

    processed: int = 0
    filtered: int = 0
    pos: int = 0
    last_event: dict[str, Any] | None = None
    consumer: str | None = None  # the consumer of the instance forwarding it now (for the lag)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = asdict(self)
        d.pop("extra", None)
        return json.dumps(d, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Stats:
        d = json.loads(raw)
        return cls(**{k: d[k] for k in ("processed", "filtered", "pos", "last_event", "consumer") if k in d})


class LinkStore:
    def __init__(self, nc: Client, log: Log, subjects: Subjects, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.peers = Peers(nc, subjects, timeout=settings.request_timeout_s)
        self.kv: Any = None
        self.stores = KnownStores(self.peers, settings)  # stores known to exist, dropped when idle

    async def open(self) -> None:
        bucket = self.subjects.links_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater stream links")
        )

    def changes_subject(self) -> str:
        """Every write to a link definition is published here by JetStream (the KV subject)."""
        return self.subjects.kv_subject(self.subjects.links_bucket(), "def.>")

    # --- stores (asked of the stream service, which owns them) -------------------------------
    async def ensure_store(self, store: str, *, create: bool = False) -> None:
        """``store_not_found`` unless the store exists; ``create`` (writes only, ADR 0016): make
        it when stores are created on first use. Reads never create a store."""
        await self.stores.ensure(store, create=create)

    # --- keys ---------------------------------------------------------------------------------
    @staticmethod
    def def_key(store: str, key: str) -> str:
        return f"def.{store}.{key}"

    @staticmethod
    def stat_key(store: str, key: str) -> str:
        return f"stat.{store}.{key}"

    @staticmethod
    def lease_key(store: str, key: str) -> str:
        return f"lease.{store}.{key}"

    @staticmethod
    def ckpt_key(store: str, key: str) -> str:
        return f"ckpt.{store}.{key}"

    # --- definitions ----------------------------------------------------------------------------
    async def get_entry(self, store: str, name: str) -> tuple[Definition, int]:
        """The definition and its KV revision; ``not_found`` when there is none."""
        try:
            entry = await self.kv.get(self.def_key(store, link_key(name)))
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise NotFoundError(f"no link named {name!r}", details={"name": name})
        return Definition.from_json(entry.value), int(entry.revision)

    async def get(self, store: str, name: str) -> Definition:
        return (await self.get_entry(store, name))[0]

    async def definitions(self, store: str | None = None) -> list[Definition]:
        """Every definition (of one store)."""
        rows = await kv_values(self.log, self.subjects.links_bucket(), f"def.{store}.>" if store else "def.>")
        return [Definition.from_json(r.value) for r in rows]

    async def create(self, store: str, req: CreateLinkRequest) -> Definition:
        await self.ensure_store(store, create=True)
        limit = self.settings.quotas.links_per_store
        if limit > 0:  # counted in KV, not in memory
            defs = await self.definitions(store)
            if any(d.name == req.name for d in defs):  # a name in use is already_exists, quota or not
                raise AlreadyExistsError(f"link {req.name!r} exists already", details={"name": req.name})
            check_quota("links_per_store", limit, len(defs), store)
        d = Definition(
            store=store,
            key=link_key(req.name),
            name=req.name,
            source=req.source.model_dump(mode="json"),
            filter=req.filter.model_dump(mode="json") if req.filter is not None else None,
            transform=req.transform.model_dump(mode="json") if req.transform is not None else None,
            backfill=req.backfill,
            created_at=time.time_ns() // 1_000_000,
            start_seq=1 if req.backfill else await self.last_seq(store) + 1,
        )
        try:
            await self.kv.create(self.def_key(store, d.key), d.to_json())
        except KeyWrongLastSequenceError:
            raise AlreadyExistsError(f"link {req.name!r} exists already", details={"name": req.name}) from None
        return d

    def filter_subject(self, d: Definition) -> str:
        if d.source["type"] == "stream":
            return self.subjects.log_subject(d.store, d.source["stream_id"])
        return self.subjects.log_all(d.store)

    async def last_seq(self, store: str) -> int:
        return await last_position(self.log, self.subjects, store)

    async def open_consumer(self, d: Definition, name: str, from_seq: int, *, probe: bool = False) -> dict[str, Any]:
        """A pull consumer of the link's source from position ``from_seq`` on. ``probe``: only to
        count what is pending (the server drops it after a few seconds)."""
        stream = self.subjects.log_stream(d.store)
        cfg: dict[str, Any] = {
            "name": name,
            "description": f"esdb-gater link {d.name[:100]}",
            "filter_subject": self.filter_subject(d),
            "ack_policy": "all",
            "ack_wait": 60 * 1_000_000_000,
            "max_deliver": -1,
            "max_ack_pending": 4096,
            "replay_policy": "instant",
            "inactive_threshold": (5 if probe else 30) * 1_000_000_000,
            "mem_storage": True,
            "num_replicas": 1,
            "metadata": {"esdb_link": d.key, "esdb_store": d.store},
        }
        if from_seq > 1:
            cfg["deliver_policy"] = "by_start_sequence"
            cfg["opt_start_seq"] = from_seq
        else:
            cfg["deliver_policy"] = "all"
        return await create_consumer(self.log, stream, name, cfg)

    async def close_consumer(self, d: Definition, name: str) -> None:
        await delete_consumer(self.log, self.subjects.log_stream(d.store), name)

    async def lag(self, d: Definition, stats: Stats) -> int:
        """Source appends not processed yet: the forwarding instance's consumer when there is one,
        else a short-lived consumer from the checkpoint that only counts."""
        if stats.consumer:
            ci = await self.consumer_info(d, stats.consumer)
            if ci is not None:
                return int(ci.get("num_pending", 0)) + int(ci.get("num_ack_pending", 0))
        name = f"link-{d.key}-lag-{uuid.uuid4().hex[:8]}"
        try:
            ci = await self.open_consumer(d, name, max(d.start_seq, stats.pos + 1), probe=True)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return 0
            raise
        with contextlib.suppress(GatewayError):
            await self.close_consumer(d, name)
        return int(ci.get("num_pending", 0))

    async def set_status(self, store: str, name: str, status: str, error: str | None = None) -> Definition:
        """Change the wanted state (compare-and-set on the revision, retried on a race)."""
        for _ in range(20):
            d, rev = await self.get_entry(store, name)
            d.status = status
            d.error = error
            try:
                await self.kv.update(self.def_key(store, d.key), d.to_json(), last=rev)
                return d
            except KeyWrongLastSequenceError:
                continue
        raise GatewayError("the link changed too often to update it; try again")

    async def delete(self, d: Definition) -> None:
        """Remove the definition first (the driving instance then stops), then the rest. The
        checkpoint stays with a kept derived stream (``drop_checkpoint`` removes it), so a link
        created again under the same name continues after what the stream already holds."""
        for key in (self.def_key(d.store, d.key), self.stat_key(d.store, d.key)):
            with contextlib.suppress(KeyNotFoundError):
                await self.kv.delete(key)

    async def drop_checkpoint(self, d: Definition) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.delete(self.ckpt_key(d.store, d.key))

    async def drop_lease(self, d: Definition) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.delete(self.lease_key(d.store, d.key))

    async def lease_value(self, d: Definition) -> bytes | None:
        try:
            entry = await self.kv.get(self.lease_key(d.store, d.key))
        except KeyNotFoundError:
            return None
        return entry.value  # type: ignore[no-any-return]

    async def holder(self, d: Definition) -> str | None:
        """The instance forwarding the link (its lease's owner); None when none does."""
        return lease_holder(await self.lease_value(d))

    async def lease_expiry(self, d: Definition) -> float | None:
        """When the link's lease runs out (epoch seconds; 0 once its holder gave it up); None
        when there is no lease or it cannot be read."""
        value = await self.lease_value(d)
        if not value:
            return None
        try:
            return float(json.loads(value).get("expires", 0))
        except (ValueError, AttributeError):
            return None

    # --- progress -------------------------------------------------------------------------------
    async def stats(self, d: Definition) -> Stats:
        try:
            entry = await self.kv.get(self.stat_key(d.store, d.key))
        except KeyNotFoundError:
            return Stats()
        return Stats.from_json(entry.value) if entry.value else Stats()

    async def save_stats(self, d: Definition, stats: Stats) -> None:
        await self.kv.put(self.stat_key(d.store, d.key), stats.to_json())

    async def checkpoint(self, d: Definition) -> Checkpoint | None:
        """The link's own checkpoint; None before its first append (or for a link made before
        checkpoints were kept in KV)."""
        try:
            entry = await self.kv.get(self.ckpt_key(d.store, d.key))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return Checkpoint.from_json(entry.value)
        except (ValueError, KeyError, TypeError):
            return None

    async def save_checkpoint(self, d: Definition, ck: Checkpoint, rev: int | None = None) -> int | None:
        """Record ``ck`` unless the stored checkpoint is as far or further along the source (a
        second, stale holder of the link must not move it back). ``rev``: the revision of this
        driver's own last write, which saves a read when nobody else wrote since. Returns the
        revision written (None when the stored one was kept)."""
        key = self.ckpt_key(d.store, d.key)
        for _ in range(10):
            if rev is not None:
                try:
                    return int(await self.kv.update(key, ck.to_json(), last=rev))
                except KeyWrongLastSequenceError:
                    rev = None
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                entry = None
            if entry is None or not entry.value:
                try:
                    return int(await self.kv.create(key, ck.to_json()))
                except KeyWrongLastSequenceError:
                    continue
            try:
                stored = Checkpoint.from_json(entry.value)
            except (ValueError, KeyError, TypeError):
                stored = None
            if stored is not None and (stored.pos, stored.ver) >= (ck.pos, ck.ver):
                return None
            rev = int(entry.revision)
        return None

    async def consumer_info(self, d: Definition, name: str) -> dict[str, Any] | None:
        return await consumer_info(self.log, self.subjects.log_stream(d.store), name)

    # --- the derived stream (through the stream service) -----------------------------------------
    async def derived_version(self, d: Definition) -> int:
        """The derived stream's version (-1 when it has no events)."""
        reply = await self.peers.call(d.store, STREAM_VERSION, VersionRequest(stream_id=d.stream_id))
        return reply.version

    async def derived_events(self, d: Definition, first: int, count: int) -> list[dict[str, Any]]:
        """Events of the derived stream from version ``first`` on (as stored), at most ``count``."""
        if count <= 0:
            return []
        request = make_request(
            ForwardRequest, stream_id=d.stream_id, start_version=max(first, 0), count=count, raw=True
        )
        try:
            reply = await self.peers.call(d.store, STREAM_FORWARD, request)
        except StreamNotFoundError:
            return []
        return [ev.model_dump(mode="python") for ev in reply.events]

    async def source_event(self, store: str, seq: int, version: int) -> dict[str, Any] | None:
        """The source event at (store position, version), read from the log itself; None when
        there is none (the check of a checkpoint a link made before ADR 0016)."""
        sm = await self.log.direct_get(self.subjects.log_stream(store), {"seq": seq})
        if sm is None:
            return None
        try:
            events = decode_commit(sm, self.subjects.stream_id_of(sm.subject))
        except Exception:
            return None
        return next((ev for ev in events if ev["version"] == version), None)

    async def append(self, d: Definition, expected: int, events: list[dict[str, Any]]) -> AppendResponse:
        request = make_request(AppendRequest, stream_id=d.stream_id, expected_version=expected, events=events)
        return await self.peers.call(d.store, STREAM_APPEND, request, wait=max(self.settings.request_timeout_s, 10.0))

    async def delete_derived(self, d: Definition) -> None:
        await self.peers.call(d.store, STREAM_DELETE, DeleteRequest(stream_id=d.stream_id))
