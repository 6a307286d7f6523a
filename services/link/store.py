"""JetStream state of the link service (docs/adr/0010-links.md).

* Definitions, progress counters and driving leases: the KV bucket ``<prefix>-links``, keys
  ``def.<store>.<key>``, ``stat.<store>.<key>`` and ``lease.<store>.<key>`` (``key`` = hash of
  the link's name).
* Reading the source: each time an instance starts forwarding a link, it creates its own pull
  consumer on the store's log stream, ``link-<key>-<nonce>`` (in memory, removed by the server
  after 30 s without pulls), starting at the link's checkpoint. The checkpoint is the derived
  stream itself (the last event's ``source_position``/``source_version``) and the ``stat``
  counters' position. No two instances ever share a consumer, so neither can take appends
  from the other's sequence.
* Writing: through the stream service (``<prefix>.api.<store>.stream.append``), never to the log
  directly, so appends to ``$link:<name>`` get the stream service's checks, idempotency and
  indexes like any other append.
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

from shared.errors import (
    AlreadyExistsError,
    GatewayError,
    NotFoundError,
    StoreNotFoundError,
    StreamNotFoundError,
)
from shared.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log, kv_values, open_kv
from shared.models.link import CreateLinkRequest, derived_stream
from shared.peers import Peers
from shared.settings import Settings
from shared.subjects import Subjects

__all__ = ["Definition", "LinkStore", "Stats", "link_key"]

ERR_CONSUMER_NOT_FOUND = 10014


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
        self._stores: set[str] = set()

    async def open(self) -> None:
        bucket = self.subjects.links_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater stream links")
        )

    def changes_subject(self) -> str:
        """Every write to a link definition is published here by JetStream (the KV subject)."""
        return self.subjects.kv_subject(self.subjects.links_bucket(), "def.>")

    # --- stores (asked of the stream service, which owns them) -------------------------------
    async def ensure_store(self, store: str) -> None:
        if store in self._stores:
            return
        try:
            await self.peers.call(store, "store", "info", {})
        except StoreNotFoundError:
            if not self.settings.auto_create_stores:
                raise
            await self.peers.call(store, "store", "create", {})
        self._stores.add(store)

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
        await self.ensure_store(store)
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
        si = await self.log.api(f"$JS.API.STREAM.INFO.{self.subjects.log_stream(store)}")
        return int(si.get("state", {}).get("last_seq", 0))

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
        return await self.log.api(
            f"$JS.API.CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": cfg, "action": "create"}
        )

    async def close_consumer(self, d: Definition, name: str) -> None:
        try:
            await self.log.api(f"$JS.API.CONSUMER.DELETE.{self.subjects.log_stream(d.store)}.{name}")
        except JetStreamApiError as exc:
            if exc.err_code not in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
                raise

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
        """Remove the definition first (the driving instance then stops), then the rest."""
        for key in (self.def_key(d.store, d.key), self.stat_key(d.store, d.key)):
            with contextlib.suppress(KeyNotFoundError):
                await self.kv.delete(key)

    async def drop_lease(self, d: Definition) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.delete(self.lease_key(d.store, d.key))

    async def lease_value(self, d: Definition) -> bytes | None:
        try:
            entry = await self.kv.get(self.lease_key(d.store, d.key))
        except KeyNotFoundError:
            return None
        return entry.value  # type: ignore[no-any-return]

    # --- progress -------------------------------------------------------------------------------
    async def stats(self, d: Definition) -> Stats:
        try:
            entry = await self.kv.get(self.stat_key(d.store, d.key))
        except KeyNotFoundError:
            return Stats()
        return Stats.from_json(entry.value) if entry.value else Stats()

    async def save_stats(self, d: Definition, stats: Stats) -> None:
        await self.kv.put(self.stat_key(d.store, d.key), stats.to_json())

    async def consumer_info(self, d: Definition, name: str) -> dict[str, Any] | None:
        try:
            return await self.log.api(f"$JS.API.CONSUMER.INFO.{self.subjects.log_stream(d.store)}.{name}")
        except JetStreamApiError as exc:
            if exc.err_code in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
                return None
            raise

    # --- the derived stream (through the stream service) -----------------------------------------
    async def derived_tail(self, d: Definition, look_back: int = 100) -> tuple[int, tuple[int, int]]:
        """The derived stream's version and the checkpoint of the last event this link wrote:
        (source position, source version); (-1, (0, -1)) for an empty stream."""
        try:
            reply = await self.peers.call(
                d.store,
                "stream",
                "backward",
                {"stream_id": d.stream_id, "start_version": -1, "count": look_back, "raw": True},
            )
        except StreamNotFoundError:
            return -1, (0, -1)
        events = reply.get("events") or []
        if not events:
            return -1, (0, -1)
        version = int(events[0]["version"])
        for ev in events:
            meta = ev.get("metadata") or {}
            if "source_position" in meta and "source_version" in meta:
                return version, (int(meta["source_position"]), int(meta["source_version"]))
        return version, (0, -1)

    async def append(self, d: Definition, expected: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        reply: dict[str, Any] = await self.peers.call(
            d.store,
            "stream",
            "append",
            {"stream_id": d.stream_id, "expected_version": expected, "events": events},
            wait=max(self.settings.request_timeout_s, 10.0),
        )
        return reply

    async def delete_derived(self, d: Definition) -> None:
        await self.peers.call(d.store, "stream", "delete", {"stream_id": d.stream_id})
