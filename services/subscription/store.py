"""JetStream state of the subscription service (docs/adr/0009-persistent-subscriptions.md).

* Definitions and delivery leases: the KV bucket ``<prefix>-subscriptions``, keys
  ``def.<store>.<key>`` and ``lease.<store>.<key>`` (``key`` = hash of type, selector, name).
* Progress: one durable JetStream consumer per subscription on the store's log stream,
  ``sub-<key>``, explicit acks, ``max_ack_pending`` = max_in_flight, ``max_deliver`` = the
  subscription's max_deliver + 1 (the extra delivery is the service's cue to park).
  Its ack floor is the checkpoint: it only moves forward.
* Parked events: the stream ``<prefix>-dlq-<store>``, subject ``<prefix>.dlq.<store>.<key>``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from shared.authz import service_headers
from shared.errors import (
    AlreadyExistsError,
    GatewayError,
    InvalidRequestError,
    StoreNotFoundError,
    error_from_envelope,
)
from shared.eventlog import is_commit
from shared.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log, StoredMsg, kv_values, open_kv
from shared.models.subscription import SaveRequest
from shared.quotas import IdleMap, check_quota
from shared.settings import Settings
from shared.subjects import Subjects

__all__ = ["Definition", "SubscriptionStore", "subscription_key"]

ERR_CONSUMER_NOT_FOUND = 10014


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
        self._stores: IdleMap[str, bool] = IdleMap(settings.quotas.idle_evict_s)  # stores known to exist

    async def open(self) -> None:
        bucket = self.subjects.subscriptions_bucket()
        self.kv = await open_kv(
            self.js, KeyValueConfig(bucket=bucket, history=1, direct=True, description="esdb-gater subscriptions")
        )

    # --- stores (asked of the stream service, which owns them) -------------------------------
    async def ensure_store(self, store: str, *, create: bool = False) -> None:
        """``store_not_found`` unless the store exists; ``create`` (writes only, ADR 0016): make
        it when stores are created on first use. Reads never create a store."""
        if store in self._stores:
            return
        try:
            await self._api(store, "store", "info")
        except StoreNotFoundError:
            if not self.settings.auto_create_stores:
                raise
            if not create:
                return  # a read: answered as for an empty store, and nothing is made (ADR 0016)
            await self._api(store, "store", "create", internal=True)  # counted as made on first use
        self._stores.add(store)

    async def _api(
        self, store: str, service: str, op: str, body: dict[str, Any] | None = None, *, internal: bool = False
    ) -> Any:
        subject = (self.subjects.internal if internal else self.subjects.api)(store, service, op)
        msg = await self.log._request(subject, json.dumps(body or {}).encode(), service_headers(self.log.nc))
        reply = json.loads(msg.data)
        if msg.headers and "Nats-Service-Error-Code" in msg.headers:
            raise error_from_envelope(reply)
        return reply

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
            await self.log.api(
                f"$JS.API.CONSUMER.CREATE.{self.subjects.log_stream(store)}.{d.consumer}",
                {"stream_name": self.subjects.log_stream(store), "config": consumer, "action": "create"},
            )
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
            "ack_policy": "explicit",
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
            reply = await self._api(
                store, "stream", "read", {"stream_id": stream_id, "start_version": version, "count": 1}
            )
        except GatewayError as exc:
            if exc.code.value == "stream_not_found":
                return None
            raise
        events = reply.get("events") or []
        return int(events[0]["position"]) if events else None

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
        try:
            return await self.log.api(f"$JS.API.CONSUMER.INFO.{self.subjects.log_stream(d.store)}.{d.consumer}")
        except JetStreamApiError as exc:
            if exc.err_code in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
                return None
            raise

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
            try:
                await self.log.api(
                    f"$JS.API.STREAM.CREATE.{name}",
                    {
                        "name": name,
                        "description": f"esdb-gater parked subscription events of store {store}",
                        "subjects": [f"{self.subjects.dlq_root(store)}.>"],
                        "storage": cfg.get("storage", "file"),
                        "num_replicas": cfg.get("num_replicas", 1),
                        "allow_direct": True,
                    },
                )
            except JetStreamApiError as exc2:
                if exc2.err_code != 10058:
                    raise

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
