"""JetStream state of the subscription service (docs/adr/0009-persistent-subscriptions.md).

* Definitions and delivery leases: the KV bucket ``<prefix>-subscriptions``, keys
  ``def.<store>.<key>`` and ``lease.<store>.<key>`` (``key`` = hash of type, selector, name).
* Progress: one durable JetStream consumer per subscription on the store's log stream,
  ``sub-<key>``, explicit acks (ack all for batch or cumulative definitions, ADR 0024),
  ``max_ack_pending`` = max_in_flight, ``max_deliver`` = the subscription's max_deliver + 1
  (the extra delivery is the service's cue to park). Its ack floor is the checkpoint: it only moves forward.
* Parked events: the stream ``<prefix>-dlq-<store>``, subject ``<prefix>.dlq.<store>.<key>``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel

from esdb_gater.shared.core.codec import JSON
from esdb_gater.shared.core.errors import AlreadyExistsError, GatewayError, InvalidRequestError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import commit_of, is_commit
from esdb_gater.shared.log.jetstream import (
    ERR_CONSUMER_NOT_FOUND,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    Log,
    StoredMsg,
    consumer_info,
    create_consumer,
    create_stream,
    open_kv,
)
from esdb_gater.shared.log.kv import kv_values
from esdb_gater.shared.log.lease import lease_holder
from esdb_gater.shared.log.quotas import check_quota
from esdb_gater.shared.log.stores import KnownStores
from esdb_gater.shared.models.peer_ops import STREAM_READ
from esdb_gater.shared.models.stream import ReadRequest
from esdb_gater.shared.models.subscription import SaveRequest
from esdb_gater.shared.runtime.peers import Peers, make_request

__all__ = [
    "ControlAck",
    "ControlAckReply",
    "ControlReplay",
    "ControlReplayReply",
    "Definition",
    "SubscriptionStore",
    "subscription_key",
]


def subscription_key(type_: str, selector: Any, name: str) -> str:
    """Stable id of (type, selector, name): safe in subjects, KV keys and consumer names."""
    raw = json.dumps([type_, selector, name], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Definition:
    """What ``save`` stored; everything a delivering instance needs."""

    store: str
    key: str
    type: str
    selector: Any
    name: str
    subscriber: str
    start_from: Any
    created_at: int
    max_in_flight: int
    ack_wait_ms: int
    max_deliver: int
    backoff_ms: list[int] | None
    codec: str
    filter_subject: str
    skip_below_version: int = 0
    # ADR 0024; definitions saved before these fields load with the defaults (today's behaviour)
    delivery: Literal["event", "batch"] = "event"
    batch_max: int = 100
    ack: Literal["each", "cumulative"] = "each"
    consumer_ack: Literal["explicit", "all"] = "explicit"  # the consumer's JetStream ack_policy
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def consumer(self) -> str:
        return f"sub-{self.key}"

    def to_json(self) -> bytes:
        d = dict(self.__dict__)
        d.pop("extra", None)
        return json.dumps(d, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Definition:
        d = json.loads(raw)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "extra"}
        return cls(**known)


# The subscription service's control messages between its own instances (JSON on
# Subjects.subscription_ack / subscription_replay): a handler forwards, the driver answers.
class ControlAck(BaseModel):
    stream_id: str
    event_number: int
    cumulative: bool | None = None  # None: the subscription's ack mode


class ControlAckReply(BaseModel):
    ok: bool = True
    acked: bool = False


class ControlReplay(BaseModel):
    pass


class ControlReplayReply(BaseModel):
    replayed: int = 0


def _rfc3339_from_us(us: int) -> str:
    sec, frac = divmod(us, 1_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}.{frac:06d}Z"


class SubscriptionStore:
    def __init__(self, nc: Client, log: Log, subjects: Subjects, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.log = log
        self.subjects = subjects
        self.settings = settings
        self.kv: Any = None
        self.peers = Peers(nc, subjects, timeout=settings.request_timeout_s)
        self.stores = KnownStores(self.peers, settings)  # stores known to exist, dropped when idle

    async def open(self) -> None:
        bucket = self.subjects.subscriptions_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater subscriptions")
        )

    # --- stores (asked of the stream service, which owns them) -------------------------------
    async def ensure_store(self, store: str, *, create: bool = False) -> None:
        """``store_not_found`` unless the store exists; ``create`` (writes only, ADR 0016): make
        it when stores are created on first use. Reads never create a store."""
        await self.stores.ensure(store, create=create)

    # --- the instance delivering a subscription (its control subjects, JSON) ------------------
    async def forward_ack(
        self, d: Definition, stream_id: str, event_number: int, cumulative: bool | None = None
    ) -> bool:
        """ack_event at the instance delivering ``d``: True when it had that event pending."""
        reply = await self.peers.ask(
            self.subjects.subscription_ack(d.store, d.key),
            ControlAck(stream_id=stream_id, event_number=event_number, cumulative=cumulative),
            ControlAckReply,
            service="subscription",
            codec=JSON,
        )
        return reply.acked

    async def forward_replay(self, d: Definition) -> int:
        """replay_parked at the instance delivering ``d``: how many parked events it sent again."""
        reply = await self.peers.ask(
            self.subjects.subscription_replay(d.store, d.key),
            ControlReplay(),
            ControlReplayReply,
            service="subscription",
            codec=JSON,
        )
        return reply.replayed

    # --- definitions ------------------------------------------------------------------------
    @staticmethod
    def def_key(store: str, key: str) -> str:
        return f"def.{store}.{key}"

    @staticmethod
    def lease_key(store: str, key: str) -> str:
        return f"lease.{store}.{key}"

    async def get_def(self, store: str, key: str) -> Definition | None:
        try:
            entry = await self.kv.get(self.def_key(store, key))
        except KeyNotFoundError:
            return None
        return Definition.from_json(entry.value) if entry.value else None

    async def create(self, store: str, req: SaveRequest) -> Definition:
        await self.ensure_store(store, create=True)
        key = subscription_key(req.type, req.selector, req.name)
        limit = self.settings.quotas.subscriptions_per_store
        if limit > 0 and await self.get_def(store, key) is None:  # counted in KV, not in memory
            check_quota("subscriptions_per_store", limit, len(await self.definitions(store)), store)
        d = Definition(
            store=store,
            key=key,
            type=req.type,
            selector=req.selector,
            name=req.name,
            subscriber=req.subscriber,
            start_from=req.start_from,
            created_at=int(time.time() * 1000),
            max_in_flight=req.max_in_flight,
            ack_wait_ms=req.ack_wait_ms,
            max_deliver=req.max_deliver,
            backoff_ms=req.backoff_ms,
            codec=req.codec,
            delivery=req.delivery,
            batch_max=req.batch_max,
            ack=req.ack,
            # one JetStream ack covers every commit up to it: ADR 0024
            consumer_ack="all" if req.delivery == "batch" or req.ack == "cumulative" else "explicit",
            filter_subject=(
                self.subjects.log_subject(store, req.selector)
                if req.type == "stream" and req.selector != "$all"
                else self.subjects.log_all(store)
            ),
        )
        consumer = await self._consumer_config(d)
        try:
            await self.kv.create(self.def_key(store, key), d.to_json())
        except KeyWrongLastSequenceError:
            raise AlreadyExistsError(
                f"subscription {req.name!r} ({req.type} {req.selector!r}) exists already",
                details={"name": req.name, "type": req.type, "key": key},
            ) from None
        try:
            await create_consumer(self.log, self.subjects.log_stream(store), d.consumer, consumer)
        except GatewayError as exc:
            await self.kv.delete(self.def_key(store, key))
            if isinstance(exc, JetStreamApiError) and exc.js_status < 500:
                raise InvalidRequestError(
                    f"JetStream refused the subscription: {exc.description}",
                    details={"field": "body", "reason": exc.description, "err_code": exc.err_code},
                ) from None
            raise
        return d

    async def _consumer_config(self, d: Definition) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "durable_name": d.consumer,
            "description": f"esdb-gater subscription {d.name[:100]}",
            "filter_subject": d.filter_subject,
            "ack_policy": d.consumer_ack,
            "ack_wait": d.ack_wait_ms * 1_000_000,
            # one more delivery than the subscriber gets: that last one tells us to park
            "max_deliver": d.max_deliver + 1,
            "max_ack_pending": d.max_in_flight,
            "replay_policy": "instant",
            "metadata": {"esdb_subscription": d.key, "esdb_store": d.store},
        }
        if d.backoff_ms:
            cfg["backoff"] = [ms * 1_000_000 for ms in d.backoff_ms[: d.max_deliver]]
        sf = d.start_from
        if sf == "start":
            cfg["deliver_policy"] = "all"
        elif sf == "end":
            cfg["deliver_policy"] = "new"
        else:
            kind, value = (
                ("version" if d.type == "stream" else "position", sf) if isinstance(sf, int) else next(iter(sf.items()))
            )
            if kind == "timestamp":
                cfg["deliver_policy"] = "by_start_time"
                cfg["opt_start_time"] = _rfc3339_from_us(int(value))
            elif kind == "position":
                cfg["deliver_policy"] = "by_start_sequence" if value > 0 else "all"
                if value > 0:
                    cfg["opt_start_seq"] = int(value)
            else:  # a version of one stream ($all has no versions: treat as position)
                if d.selector == "$all":
                    cfg["deliver_policy"] = "by_start_sequence" if value > 0 else "all"
                    if value > 0:
                        cfg["opt_start_seq"] = int(value)
                else:
                    d.skip_below_version = int(value)
                    seq = await self._position_of_version(d.store, d.selector, int(value))
                    if seq is None:
                        cfg["deliver_policy"] = "all"
                    else:
                        cfg["deliver_policy"] = "by_start_sequence"
                        cfg["opt_start_seq"] = seq
        return cfg

    async def _position_of_version(self, store: str, stream_id: str, version: int) -> int | None:
        """The position of the append holding ``version`` (asked of the stream service); None
        when the stream does not reach that far yet (deliver from its start and skip)."""
        try:
            request = make_request(ReadRequest, stream_id=stream_id, start_version=version, count=1)
            reply = await self.peers.call(store, STREAM_READ, request)
        except GatewayError as exc:
            if exc.code.value == "stream_not_found":
                return None
            raise
        return reply.events[0].position if reply.events else None

    async def delete(self, store: str, key: str) -> bool:
        existed = await self.get_def(store, key) is not None
        try:
            if existed:  # a delete marker for a key that never was would stay in the bucket for good
                await self.kv.delete(self.def_key(store, key))
                await self.kv.delete(self.lease_key(store, key))
        except KeyNotFoundError:
            pass
        for call, body in (
            (f"$JS.API.CONSUMER.DELETE.{self.subjects.log_stream(store)}.sub-{key}", None),
            (
                f"$JS.API.STREAM.PURGE.{self.subjects.dlq_stream(store)}",
                {"filter": self.subjects.dlq_subject(store, key)},
            ),
        ):
            try:
                await self.log.api(call, body)
            except JetStreamApiError as exc:
                if exc.err_code not in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
                    raise
        return existed

    async def definitions(self, store: str | None = None) -> list[Definition]:
        """Every definition (of one store). ``kv_values`` lists keys with STREAM.INFO and Direct
        Gets: a KV watch would leave an ephemeral consumer behind on every listing, and the
        supervisors list several times a second (JetStream then refuses new consumers)."""
        rows = await kv_values(self.log, self.subjects.subscriptions_bucket(), f"def.{store}.>" if store else "def.>")
        return [Definition.from_json(r.value) for r in rows]

    async def lease_value(self, store: str, key: str) -> bytes | None:
        try:
            entry = await self.kv.get(self.lease_key(store, key))
        except KeyNotFoundError:
            return None
        return entry.value  # type: ignore[no-any-return]

    # --- progress ---------------------------------------------------------------------------
    async def consumer_info(self, d: Definition) -> dict[str, Any] | None:
        return await consumer_info(self.log, self.subjects.log_stream(d.store), d.consumer)

    async def commit_at(self, store: str, seq: int) -> StoredMsg | None:
        """The commit at ``seq``; for a corrupt entry (ADR 0013), the last commit of the same
        subject before it."""
        sm = await self.log.direct_get(self.subjects.log_stream(store), {"seq": seq})
        for _ in range(32):
            if sm is None or is_commit(sm) or sm.seq <= 1:
                break
            msgs, _ = await self.log.direct_batch(
                self.subjects.log_stream(store), {"multi_last": [sm.subject], "up_to_seq": sm.seq - 1, "batch": 1}
            )
            sm = msgs[0] if msgs else None
        return sm if sm is not None and is_commit(sm) else None

    async def next_commit(self, d: Definition, after_seq: int) -> StoredMsg | None:
        return await self.log.direct_get(
            self.subjects.log_stream(d.store), {"seq": after_seq + 1, "next_by_subj": d.filter_subject}
        )

    async def consumer_progress(self, d: Definition) -> tuple[int, int]:
        """(ack floor, events not yet acked) of the subscription's consumer; (0, 0) without one."""
        ci = await self.consumer_info(d) or {}
        floor = int(ci.get("ack_floor", {}).get("stream_seq", 0))
        return floor, int(ci.get("num_pending", 0)) + int(ci.get("num_ack_pending", 0))

    async def last_version_at(self, store: str, seq: int) -> int | None:
        """The stream version of the last event of the commit at position ``seq`` (see ``commit_at``)."""
        sm = await self.commit_at(store, seq)
        return commit_of(sm).last if sm is not None else None

    async def next_commit_time(self, d: Definition, after_seq: int) -> float | None:
        """When the subscription's next commit after position ``after_seq`` was written (epoch seconds)."""
        sm = await self.next_commit(d, after_seq)
        return sm.ts_ns / 1e9 if sm is not None else None

    async def holder(self, d: Definition) -> str | None:
        """The instance delivering the subscription (its lease's owner); None when none does."""
        return lease_holder(await self.lease_value(d.store, d.key))

    # --- parked events ----------------------------------------------------------------------
    async def ensure_dlq(self, store: str) -> None:
        name = self.subjects.dlq_stream(store)
        try:
            await self.log.api(f"$JS.API.STREAM.INFO.{name}")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            info = await self.log.api(f"$JS.API.STREAM.INFO.{self.subjects.log_stream(store)}")
            cfg = info["config"]
            await create_stream(
                self.log,
                {
                    "name": name,
                    "description": f"esdb-gater parked subscription events of store {store}",
                    "subjects": [f"{self.subjects.dlq_root(store)}.>"],
                    "storage": cfg.get("storage", "file"),
                    "num_replicas": cfg.get("num_replicas", 1),
                    "allow_direct": True,
                },
            )

    async def parked_count(self, d: Definition) -> int:
        try:
            info = await self.log.api(
                f"$JS.API.STREAM.INFO.{self.subjects.dlq_stream(d.store)}",
                {"subjects_filter": self.subjects.dlq_subject(d.store, d.key)},
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return 0
            raise
        subjects = info.get("state", {}).get("subjects") or {}
        return int(sum(subjects.values()))

    async def park(self, d: Definition, body: bytes, headers: dict[str, str]) -> None:
        await self.ensure_dlq(d.store)
        await self.log.publish(self.subjects.dlq_subject(d.store, d.key), body, headers)

    async def parked(self, d: Definition, limit: int = 1000) -> list[StoredMsg]:
        try:
            msgs, _ = await self.log.direct_batch(
                self.subjects.dlq_stream(d.store),
                {"seq": 1, "batch": limit, "next_by_subj": self.subjects.dlq_subject(d.store, d.key)},
            )
        except GatewayError:  # no parked events yet: the stream may not exist
            return []
        return msgs

    async def unpark(self, d: Definition, seq: int) -> None:
        await self.log.api(
            f"$JS.API.STREAM.MSG.DELETE.{self.subjects.dlq_stream(d.store)}", {"seq": seq, "no_erase": True}
        )
