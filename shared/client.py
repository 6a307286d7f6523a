"""``GaterClient``: the seed's API (``esdb_gater_api``) over NATS request/reply.

    client = await GaterClient.connect("nats://127.0.0.1:4222")
    await client.append_events("orders", "order-1", -1, [{"event_type": "Placed", "data": {...}}])
    events = await client.stream_forward("orders", "order-1", 0, 100)

Error replies raise the classes of ``shared.errors`` (``WrongExpectedVersionError`` …), the
same ones the services raise. JSON by default; ``codec="msgpack"`` sends and receives msgpack.
Binary event data comes back as ``bytes`` with either codec.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared import jetstream, security
from shared.authz import bearer_headers
from shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec
from shared.errors import (
    ERROR_CODE_HEADER,
    GatewayError,
    GatewayTimeoutError,
    UnavailableError,
    error_from_envelope,
)
from shared.eventlog import new_event_id
from shared.models.causation import GraphResponse
from shared.models.channel import ChannelInfo, HistoryResponse, PublishResponse, SubscribeResponse
from shared.models.health import HealthReport, MemoryStatsResponse
from shared.models.link import LinkInfo
from shared.models.scavenger import ArchiveReadResponse, Policy, ScavengeResult, ScavengeResults
from shared.models.schema import SchemaRecord, SchemaSummary
from shared.models.snapshot import RecordSnapshotResponse, Snapshot
from shared.models.stream import (
    AppendResponse,
    RecordedEvent,
    ReindexResponse,
    StoreInfoResponse,
    is_json_content_type,
)
from shared.models.subscription import SubscriptionInfo
from shared.retry import RetryConfig, default_config, with_retry
from shared.subjects import Subjects
from shared.telemetry import WORKER_LOOKUP, client_span, emit, inject_context, watch_connection

__all__ = ["ChannelDelivery", "ChannelSubscription", "Deliveries", "Delivery", "GaterClient", "RetryConfig", "Worker"]

T = TypeVar("T")
_DEFAULT_RETRY = RetryConfig()  # a marker: "the retry settings" (shared.retry.default_config)

Event = dict[str, Any]


class GaterClient:
    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = "esdb",
        codec: Literal["json", "msgpack"] = "json",
        timeout: float = 5.0,
        retry: RetryConfig | None = _DEFAULT_RETRY,
        token: str | None = None,
    ) -> None:
        """``retry``: retriable errors (timeout, unavailable, rate_limited) are retried with
        backoff (SPEC.md §10); by default as the ``retry`` settings say (``ESDB_GATER_RETRY__*``:
        10 retries, 100 ms, 30 000 ms; docs/telemetry.md), ``None`` turns that off. ``token``: a
        capability token sent as ``Authorization: Bearer <token>`` with every request
        (docs/security.md)."""
        self.nc = nc
        self.token = token
        self.subjects = Subjects(prefix)
        self.codec: Codec = MSGPACK if codec == "msgpack" else JSON
        self.timeout = timeout
        self.retry = default_config() if retry is _DEFAULT_RETRY else retry
        self._owns_connection = False

    @classmethod
    async def connect(cls, url: str = "nats://127.0.0.1:4222", **kwargs: Any) -> GaterClient:
        nc = await jetstream.connect(url)
        watch_connection(nc, "client")  # cluster.node.up/down (docs/telemetry.md)
        client = cls(nc, **kwargs)
        client._owns_connection = True
        return client

    def with_token(self, token: str | None) -> GaterClient:
        """A client on the same connection that sends ``token`` instead (None: no token)."""
        other = copy.copy(self)
        other.token = token
        other._owns_connection = False
        return other

    async def close(self) -> None:
        if self._owns_connection and not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> GaterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- transport --------------------------------------------------------------------------
    async def request(self, store: str, service: str, op: str, body: dict[str, Any]) -> Any:
        """Send a request (again, with backoff, on retriable errors); return the decoded reply or
        raise the error it carries (``RetriesExhaustedError`` when retries ran out)."""
        if self.retry is None:
            return await self._request_once(store, service, op, body)
        return await with_retry(
            lambda: self._request_once(store, service, op, body), self.retry, store=store, op=f"{service}.{op}"
        )

    async def execute(self, store: str, fn: Callable[[], Awaitable[T]], config: RetryConfig | None = None) -> T:
        """The seed's ``execute(Store, Fun, Config)``: run ``fn`` with retry."""
        return await with_retry(fn, config or self.retry or RetryConfig(), store=store, op="execute")

    async def _request_once(self, store: str, service: str, op: str, body: dict[str, Any]) -> Any:
        subject = self.subjects.api(store, service, op)
        with client_span(f"{service}.{op}", {"messaging.system": "nats", "esdb.store": store}):
            return await self._send(subject, body)

    async def _send(self, subject: str, body: dict[str, Any]) -> Any:
        headers = inject_context(bearer_headers(self.token))
        if self.codec is MSGPACK:
            headers[CONTENT_TYPE_HEADER] = MSGPACK.content_type
        try:
            msg = await self.nc.request(subject, self.codec.encode(body), timeout=self.timeout, headers=headers or None)
        except NoRespondersError:
            raise UnavailableError(f"no service answers {subject}", details={"subject": subject}) from None
        except NatsTimeoutError:
            raise GatewayTimeoutError(
                f"no reply on {subject} in {self.timeout}s", details={"subject": subject}
            ) from None
        codec = MSGPACK if (msg.headers or {}).get(CONTENT_TYPE_HEADER) == MSGPACK.content_type else JSON
        reply = codec.decode(msg.data)
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            raise error_from_envelope(reply)
        return reply

    async def _stream(self, store: str, op: str, body: dict[str, Any]) -> Any:
        return await self.request(store, "stream", op, body)

    @staticmethod
    def _events(reply: dict[str, Any]) -> list[RecordedEvent]:
        out = []
        for ev in reply["events"]:
            data = ev.get("data")
            if isinstance(data, str) and not is_json_content_type(ev.get("data_content_type", "application/json")):
                ev["data"] = base64.b64decode(data)
            out.append(RecordedEvent.model_validate(ev))
        return out

    # --- stream operations (seed names) ------------------------------------------------------
    async def append_events(self, store: str, stream_id: str, *args: Any) -> AppendResponse:
        """``append_events(store, stream_id, events)`` (any version) or
        ``append_events(store, stream_id, expected_version, events)``."""
        if len(args) == 1:
            expected, events = -2, args[0]
        elif len(args) == 2:
            expected, events = args
        else:
            raise TypeError("append_events(store, stream_id, [expected_version,] events)")
        events = list(events)
        if self.retry is not None:
            # Give every event an id before the first try, so a retry after a lost reply is
            # recognised as the same append (idempotent) instead of being stored twice.
            events = [e if e.get("event_id") else {**e, "event_id": new_event_id()} for e in events]
        reply = await self._stream(
            store, "append", {"stream_id": stream_id, "expected_version": expected, "events": events}
        )
        return AppendResponse.model_validate(reply)

    @staticmethod
    def _raw(body: dict[str, Any], raw: bool) -> dict[str, Any]:
        """Reads come back upcast to the current schema versions; ``raw=True`` asks for the
        events as stored."""
        if raw:
            body["raw"] = True
        return body

    async def get_events(
        self,
        store: str,
        stream_id: str,
        start_version: int,
        count: int,
        direction: str = "forward",
        *,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        reply = await self._stream(
            store,
            "read",
            self._raw(
                {"stream_id": stream_id, "start_version": start_version, "count": count, "direction": direction}, raw
            ),
        )
        return self._events(reply)

    async def stream_forward(
        self, store: str, stream_id: str, start_version: int, count: int, *, raw: bool = False
    ) -> list[RecordedEvent]:
        reply = await self._stream(
            store, "forward", self._raw({"stream_id": stream_id, "start_version": start_version, "count": count}, raw)
        )
        return self._events(reply)

    async def stream_backward(
        self, store: str, stream_id: str, start_version: int, count: int, *, raw: bool = False
    ) -> list[RecordedEvent]:
        reply = await self._stream(
            store, "backward", self._raw({"stream_id": stream_id, "start_version": start_version, "count": count}, raw)
        )
        return self._events(reply)

    async def get_version(self, store: str, stream_id: str) -> int:
        return int((await self._stream(store, "version", {"stream_id": stream_id}))["version"])

    async def stream_exists(self, store: str, stream_id: str) -> bool:
        return bool((await self._stream(store, "exists", {"stream_id": stream_id}))["exists"])

    async def get_streams(self, store: str, *, page_size: int = 1000) -> list[str]:
        """Every stream id of the store, sorted (follows the pages)."""
        out: list[str] = []
        cursor: str | None = None
        while True:
            streams, cursor = await self.list_streams(store, cursor=cursor, limit=page_size)
            out.extend(streams)
            if cursor is None:
                return out

    async def list_streams(
        self, store: str, *, cursor: str | None = None, limit: int = 1000
    ) -> tuple[list[str], str | None]:
        """One page of stream ids and the cursor of the next page (None on the last)."""
        body: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            body["cursor"] = cursor
        reply = await self._stream(store, "list", body)
        return list(reply["streams"]), reply.get("next")

    async def delete_stream(self, store: str, stream_id: str) -> None:
        await self._stream(store, "delete", {"stream_id": stream_id})

    async def read_until(
        self,
        store: str,
        stream_id: str,
        timestamp: int,
        *,
        direction: str = "forward",
        limit: int = 1000,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        reply = await self._stream(
            store,
            "read_until",
            self._raw({"stream_id": stream_id, "timestamp": timestamp, "direction": direction, "limit": limit}, raw),
        )
        return self._events(reply)

    async def read_range(
        self,
        store: str,
        stream_id: str,
        from_ts: int,
        to_ts: int,
        *,
        direction: str = "forward",
        limit: int = 1000,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "from_ts": from_ts, "to_ts": to_ts, "direction": direction, "limit": limit}
        reply = await self._stream(store, "read_range", self._raw(body, raw))
        return self._events(reply)

    async def version_at(self, store: str, stream_id: str, timestamp: int) -> int:
        return int(
            (await self._stream(store, "version_at", {"stream_id": stream_id, "timestamp": timestamp}))["version"]
        )

    # --- stores -----------------------------------------------------------------------------
    async def create_store(self, store: str, **config: Any) -> StoreInfoResponse:
        """``replicas``, ``storage`` ("file"|"memory"), ``max_age_s``, ``max_bytes``, ``duplicate_window_s``."""
        return StoreInfoResponse.model_validate(await self.request(store, "store", "create", config))

    async def store_info(self, store: str) -> StoreInfoResponse:
        return StoreInfoResponse.model_validate(await self.request(store, "store", "info", {}))

    async def reindex_store(self, store: str) -> ReindexResponse:
        """Rebuild the store's event-id index from its log (admin; ADR 0017)."""
        return ReindexResponse.model_validate(await self.request(store, "store", "reindex", {}))

    # --- snapshots (seed names) ----------------------------------------------------------------
    async def record_snapshot(
        self,
        store: str,
        source_uuid: str,
        stream_uuid: str,
        version: int,
        record: Any,
        *,
        metadata: dict[str, Any] | None = None,
        data_content_type: str = "application/json",
        chunk_size: int | None = None,
    ) -> RecordSnapshotResponse:
        """Record a snapshot (re-recording a version overwrites it). A snapshot too big for one
        message is sent in chunks (docs/api/snapshot.md#chunked-snapshots); ``chunk_size``
        forces the chunked form with chunks of that many bytes."""
        body: dict[str, Any] = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        if metadata:
            body["metadata"] = metadata
        if data_content_type != "application/json":
            body["data_content_type"] = data_content_type
        limit = self.nc.max_payload - 4096
        if chunk_size is None and len(self.codec.encode({**body, "record": record})) <= limit:
            return RecordSnapshotResponse.model_validate(
                await self.request(store, "snapshot", "record", {**body, "record": record})
            )
        if is_json_content_type(data_content_type):
            blob = JSON.encode(record)
        elif isinstance(record, bytes):
            blob = record
        else:
            raise TypeError(f"record must be bytes for data_content_type {data_content_type!r}")
        if chunk_size is None:  # base64 makes JSON bodies 4/3 the size of the chunk
            chunk_size = limit if self.codec is MSGPACK else limit * 3 // 4
        count = max(1, -(-len(blob) // chunk_size))
        upload_id = uuid.uuid4().hex
        reply: Any = None
        for i in range(count):
            part = blob[i * chunk_size : (i + 1) * chunk_size]
            chunk_body = {**body, "upload_id": upload_id, "chunk_index": i, "chunk_count": count}
            chunk_body["chunk"] = part if self.codec is MSGPACK else base64.b64encode(part).decode("ascii")
            reply = await self.request(store, "snapshot", "record", chunk_body)
        return RecordSnapshotResponse.model_validate(reply)

    async def _snapshot_of(self, store: str, reply: dict[str, Any]) -> Snapshot:
        """A read reply as a Snapshot with its data: chunks fetched and joined, base64 decoded."""
        ctype = reply.get("data_content_type", "application/json")
        chunks = reply.get("chunks")
        if chunks:
            parts = []
            for i in range(int(chunks["count"])):
                body = {
                    "source_uuid": reply["source_uuid"],
                    "stream_uuid": reply["stream_uuid"],
                    "version": reply["version"],
                    "upload_id": chunks["upload_id"],
                    "chunk_index": i,
                }
                part = (await self.request(store, "snapshot", "read_chunk", body))["chunk"]
                parts.append(part if isinstance(part, bytes) else base64.b64decode(part))
            blob = b"".join(parts)
            digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).decode("ascii")
            if digest != chunks["digest"]:
                raise GatewayError("the snapshot's chunks do not match its digest", details={"digest": digest})
            reply["data"] = JSON.decode(blob) if is_json_content_type(ctype) else blob
        elif isinstance(reply.get("data"), str) and not is_json_content_type(ctype):
            reply["data"] = base64.b64decode(reply["data"])
        return Snapshot.model_validate(reply)

    async def read_snapshot(
        self, store: str, source_uuid: str, stream_uuid: str, version: int | Literal["latest"] = "latest"
    ) -> Snapshot:
        """The snapshot at ``version``, or the highest one; ``NotFoundError`` when there is none."""
        body = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        return await self._snapshot_of(store, await self.request(store, "snapshot", "read", body))

    async def delete_snapshot(self, store: str, source_uuid: str, stream_uuid: str, version: int) -> None:
        body = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        await self.request(store, "snapshot", "delete", body)

    async def list_snapshots(
        self, store: str, source_uuid: str, stream_uuid: str, *, include_data: bool = True
    ) -> list[Snapshot]:
        """Every snapshot of the stream, ascending by version (chunked ones fetched whole when
        ``include_data``)."""
        body: dict[str, Any] = {"source_uuid": source_uuid, "stream_uuid": stream_uuid}
        if not include_data:
            body["include_data"] = False
        reply = await self.request(store, "snapshot", "list", body)
        if not include_data:
            return [Snapshot.model_validate(s) for s in reply["snapshots"]]
        return [await self._snapshot_of(store, s) for s in reply["snapshots"]]

    # --- schemas (seed names) ------------------------------------------------------------------
    async def register_schema(self, store: str, event_type: str, schema: dict[str, Any]) -> SchemaRecord:
        """``schema``: ``version``, and optionally ``json_schema``, ``description``,
        ``upcast_from`` (docs/api/schema.md)."""
        reply = await self.request(store, "schema", "register", {"event_type": event_type, "schema": schema})
        return SchemaRecord.model_validate(reply)

    async def get_schema(self, store: str, event_type: str, version: int | None = None) -> SchemaRecord:
        body: dict[str, Any] = {"event_type": event_type}
        if version is not None:
            body["version"] = version
        return SchemaRecord.model_validate(await self.request(store, "schema", "get", body))

    async def list_schemas(self, store: str) -> list[SchemaSummary]:
        reply = await self.request(store, "schema", "list", {})
        return [SchemaSummary.model_validate(s) for s in reply["schemas"]]

    async def unregister_schema(self, store: str, event_type: str, version: int | None = None) -> None:
        body: dict[str, Any] = {"event_type": event_type}
        if version is not None:
            body["version"] = version
        await self.request(store, "schema", "unregister", body)

    async def upcast_events(self, store: str, events: list[Any]) -> list[Any]:
        """Events (dicts or RecordedEvents) at their types' current schema versions; each comes
        back as the kind it was given."""
        wire = [e.model_dump(mode="python") if isinstance(e, RecordedEvent) else dict(e) for e in events]
        reply = await self.request(store, "schema", "upcast", {"events": wire})
        out: list[Any] = []
        for given, ev in zip(events, reply["events"], strict=True):
            out.append(self._events({"events": [ev]})[0] if isinstance(given, RecordedEvent) else ev)
        return out

    # --- subscriptions (seed names) -----------------------------------------------------------
    async def save_subscription(
        self,
        store: str,
        type: str,
        selector: Any,
        name: str,
        start_from: Any = "start",
        subscriber: str = "",
        **options: Any,
    ) -> SubscriptionInfo:
        """``save_subscription(store, type, selector, name, start_from, subscriber)``; options:
        ``max_in_flight``, ``ack_wait_ms``, ``max_deliver``, ``backoff_ms``, ``codec``."""
        body = {"type": type, "selector": selector, "name": name, "start_from": start_from, "subscriber": subscriber}
        reply = await self.request(store, "subscription", "save", {**body, **options})
        return SubscriptionInfo.model_validate(reply)

    async def remove_subscription(self, store: str, type: str, selector: Any, name: str) -> None:
        await self.request(store, "subscription", "remove", {"type": type, "selector": selector, "name": name})

    async def ack_event(self, store: str, stream_id: str, subscription_name: str, event_number: int) -> None:
        body = {"stream_id": stream_id, "subscription_name": subscription_name, "event_number": event_number}
        await self.request(store, "subscription", "ack", body)

    async def get_subscriptions(self, store: str) -> list[SubscriptionInfo]:
        reply = await self.request(store, "subscription", "list", {})
        return [SubscriptionInfo.model_validate(s) for s in reply["subscriptions"]]

    async def get_subscription(self, store: str, name: str) -> SubscriptionInfo:
        return SubscriptionInfo.model_validate(await self.request(store, "subscription", "get", {"name": name}))

    async def replay_parked(self, store: str, name: str) -> int:
        return int((await self.request(store, "subscription", "replay_parked", {"name": name}))["replayed"])

    def deliveries(self, subscriber: str, *, queue: str = "") -> Deliveries:
        """Async iterator over events delivered to ``subscriber`` (optionally in a queue group,
        so several instances compete). Each item has ``.event``, ``.attempt``, ``ack()``, ``nak()``.

        Subscribe before (or right after) ``save_subscription``; use as ``async with``."""
        return Deliveries(self.nc, subscriber, queue)

    # --- channels (esdb_channel_server: publish / subscribe / unsubscribe) -----------------------
    async def publish(
        self,
        channel: str,
        topic: str,
        message: Any,
        token: str | None = None,
        *,
        secret: bytes | str | None = None,
    ) -> PublishResponse:
        """``publish(Channel, Topic, Msg[, Token])``: ok or the error (``rate_limited``,
        ``signature_required``, ``unauthorized`` …) raised. ``secret`` signs the message first
        (docs/security.md). Never retried automatically: a rate-limited caller decides, and a
        signed message sent twice is a replay."""
        if secret is not None:
            message = security.sign(message, secret)
        body: dict[str, Any] = {"channel": channel, "topic": topic, "message": message}
        if token:
            body["capability_token"] = token
        return PublishResponse.model_validate(await self._request_once("_", "channel", "publish", body))

    async def subscribe(
        self,
        channel: str,
        topic: str,
        token: str | None = None,
        *,
        queue: str = "",
        after_seq: int | None = None,
    ) -> ChannelSubscription:
        """``subscribe(Channel, Topic[, Token])``. Without a token: a NATS subscription on
        ``<prefix>.ch.<channel>.<topic>`` (wildcards and a ``queue`` group allowed). With one: the
        service forwards the topic to a private inbox after checking the token
        (``channel.subscribe``). ``after_seq`` (durable channels): first deliver what the channel
        kept after that position (``channel.history``), then live messages, without duplicates.
        ``token=""`` goes through the service without a token (channels whose mode allows it)."""
        if token is None:
            sub = await self.nc.subscribe(self.subjects.channel(channel, topic), queue=queue)
            out = ChannelSubscription(self, channel, topic, sub)
        else:
            if queue:
                raise ValueError("queue groups apply to NATS subscriptions, not token forwardings")
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox)
            body: dict[str, Any] = {"channel": channel, "topic": topic, "deliver_to": inbox}
            if token:
                body["capability_token"] = token
            try:
                reply = await self.request("_", "channel", "subscribe", body)
            except BaseException:
                await sub.unsubscribe()
                raise
            ack = SubscribeResponse.model_validate(reply)
            out = ChannelSubscription(
                self, channel, topic, sub, forward_id=ack.id, expires_at=ack.expires_at, token=token or None
            )
        await jetstream.flush_barrier(self.nc)
        if after_seq is not None:
            try:
                await out.catch_up(after_seq, token)
            except BaseException:
                await out.close()
                raise
        return out

    async def unsubscribe(self, subscription: ChannelSubscription) -> None:
        """``unsubscribe(Channel, Topic, Pid)``: stop receiving (and stop the forwarding)."""
        await subscription.close()

    async def channel_history(
        self, channel: str, topic: str = ">", after_seq: int = 0, limit: int = 100, token: str | None = None
    ) -> HistoryResponse:
        body: dict[str, Any] = {"channel": channel, "topic": topic, "after_seq": after_seq, "limit": limit}
        if token:
            body["capability_token"] = token
        return HistoryResponse.model_validate(await self.request("_", "channel", "history", body))

    async def channels(self) -> list[ChannelInfo]:
        """The channel table in effect (priority, rate limit, HMAC, capability mode, durable)."""
        reply = await self.request("_", "channel", "list", {})
        return [ChannelInfo.model_validate(c) for c in reply["channels"]]

    # --- stream links (seed names; docs/api/link.md) ----------------------------------------------
    async def create_link(self, store: str, spec: dict[str, Any]) -> LinkInfo:
        """``create_link(store, spec)``: ``{name, source, filter?, transform?, backfill?}``. Not started."""
        return LinkInfo.model_validate(await self.request(store, "link", "create", spec))

    async def start_link(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "start", {"name": name}))

    async def stop_link(self, store: str, name: str) -> LinkInfo:
        """Returns once no instance forwards the link any more."""
        return LinkInfo.model_validate(await self.request(store, "link", "stop", {"name": name}))

    async def delete_link(self, store: str, name: str, *, delete_stream: bool = False) -> None:
        """Stop and remove a link; ``$link:<name>`` stays unless ``delete_stream``."""
        await self.request(store, "link", "delete", {"name": name, "delete_stream": delete_stream})

    async def get_link(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "get", {"name": name}))

    async def list_links(self, store: str) -> list[LinkInfo]:
        reply = await self.request(store, "link", "list", {})
        return [LinkInfo.model_validate(x) for x in reply["links"]]

    async def link_info(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "info", {"name": name}))

    # --- scavenging (seed names; docs/api/scavenger.md) --------------------------------------------
    async def scavenge(
        self, store: str, stream_id: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResult:
        """``scavenge(store, stream, opts)``: ``before``, ``before_version``, ``max_age``,
        ``keep_versions``, ``require_snapshot`` (default true), ``archive``."""
        body = {**(opts or {}), **kw, "stream_id": stream_id}
        return ScavengeResult.model_validate(await self.request(store, "scavenger", "scavenge", body))

    async def scavenge_matching(
        self, store: str, pattern: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResults:
        """Every stream whose id matches ``pattern`` (``*`` = any run of characters)."""
        body = {**(opts or {}), **kw, "pattern": pattern}
        return ScavengeResults.model_validate(await self.request(store, "scavenger", "scavenge_matching", body))

    async def scavenge_dry_run(
        self, store: str, stream_id: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResult:
        body = {**(opts or {}), **kw, "stream_id": stream_id}
        return ScavengeResult.model_validate(await self.request(store, "scavenger", "dry_run", body))

    async def archive_read(self, store: str, archive_key: str) -> ArchiveReadResponse:
        reply = await self.request(store, "scavenger", "archive_read", {"archive_key": archive_key})
        return ArchiveReadResponse.model_validate(reply)

    async def set_retention_policy(self, store: str, pattern: str, **opts: Any) -> Policy:
        """``name`` (default: the pattern), ``max_age``, ``keep_versions``, ``require_snapshot``,
        ``archive``, ``interval_s``."""
        reply = await self.request(store, "scavenger", "policy_set", {**opts, "pattern": pattern})
        return Policy.model_validate(reply)

    async def get_retention_policy(self, store: str, name: str) -> Policy:
        return Policy.model_validate(await self.request(store, "scavenger", "policy_get", {"name": name}))

    async def list_retention_policies(self, store: str) -> list[Policy]:
        reply = await self.request(store, "scavenger", "policy_list", {})
        return [Policy.model_validate(p) for p in reply["policies"]]

    async def delete_retention_policy(self, store: str, name: str) -> None:
        await self.request(store, "scavenger", "policy_delete", {"name": name})

    # --- causation (seed names; docs/api/causation.md) ---------------------------------------------
    async def get_effects(self, store: str, event_id: str) -> list[RecordedEvent]:
        return self._events(await self.request(store, "causation", "effects", {"event_id": event_id}))

    async def get_cause(self, store: str, event_id: str) -> RecordedEvent:
        """The event's cause; ``NoCauseError`` when it has none, ``NotFoundError`` when unknown."""
        reply = await self.request(store, "causation", "cause", {"event_id": event_id})
        return self._events({"events": [reply["event"]]})[0]

    async def get_causation_chain(self, store: str, event_id: str) -> list[RecordedEvent]:
        """Root first, ending with the event itself."""
        return self._events(await self.request(store, "causation", "chain", {"event_id": event_id}))

    async def get_correlated(self, store: str, correlation_id: str) -> list[RecordedEvent]:
        reply = await self.request(store, "causation", "correlated", {"correlation_id": correlation_id})
        return self._events(reply)

    async def build_causation_graph(self, store: str, id: str, *, format: str = "json") -> GraphResponse:
        """``build_causation_graph(store, id)``: ``id`` is an event id, else a correlation id.
        ``format="dot"`` adds Graphviz text (``.dot``)."""
        reply = await self.request(store, "causation", "graph", {"id": id, "format": format})
        return GraphResponse.model_validate(reply)

    # --- discovery: the seed's get_workers -------------------------------------------------------------
    async def get_workers(self, service: str | None = None, *, window_s: float = 0.3) -> list[Worker]:
        """The service instances that answer ADR-32 ``$SRV.PING`` (``service``: an ADR-32 name
        such as ``esdb-stream``; None: every service) within ``window_s`` seconds. Emits
        ``esdb_gater.worker.lookup`` (docs/telemetry.md). Requests never need this: NATS routes
        them to any instance of the queue group."""
        started = time.perf_counter_ns()
        inbox = self.nc.new_inbox()
        found: dict[str, Worker] = {}

        async def on_reply(msg: Msg) -> None:
            try:
                body = JSON.decode(msg.data)
            except GatewayError:
                return
            if isinstance(body, dict) and isinstance(body.get("name"), str) and isinstance(body.get("id"), str):
                meta = body.get("metadata")
                found[body["id"]] = Worker(
                    body["name"], body["id"], str(body.get("version", "")), dict(meta) if isinstance(meta, dict) else {}
                )

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(self.subjects.srv_ping(service), b"", reply=inbox)
            await self.nc.flush(timeout=2)
            await asyncio.sleep(window_s)
        finally:
            await sub.unsubscribe()
        workers = sorted(found.values(), key=lambda w: (w.name, w.id))
        emit(
            WORKER_LOOKUP,
            {"duration": (time.perf_counter_ns() - started) // 1000, "instance_count": len(workers)},
            {"service": service or "*"},
        )
        return workers

    # --- health and memory (seed names; docs/api/health.md) ------------------------------------------
    async def health(self) -> HealthReport:
        """``healthy | degraded | unhealthy`` with the reason and every check."""
        return HealthReport.model_validate(await self.request("_", "health", "check", {}))

    async def quick_health_check(self, store: str) -> bool:
        """True, or raises the error naming the problem (``StoreNotFoundError``, ``UnavailableError``)."""
        return bool((await self.request(store, "health", "quick", {}))["ok"])

    async def get_memory_level(self, store: str) -> str:
        return str((await self.request(store, "memory", "level", {}))["level"])

    async def get_memory_stats(self, store: str) -> MemoryStatsResponse:
        """``{used, total, level}`` (and ratio, thresholds, source)."""
        return MemoryStatsResponse.model_validate(await self.request(store, "memory", "stats", {}))


@dataclass(frozen=True)
class Worker:
    """One service instance as ``$SRV.PING`` describes it (ADR-32)."""

    name: str
    id: str
    version: str
    metadata: dict[str, str]


@dataclass
class Delivery:
    """One event delivered by a subscription."""

    event: dict[str, Any]
    attempt: str
    subscription: str
    msg: Msg

    @property
    def stream_id(self) -> str:
        return str(self.event["stream_id"])

    @property
    def version(self) -> int:
        return int(self.event["version"])

    async def ack(self) -> None:
        """Native ack: reply to the delivery (no extra request to the service)."""
        await self.msg.respond(b"+ACK")

    async def nak(self) -> None:
        """Ask for redelivery after the subscription's backoff."""
        await self.msg.respond(b"-NAK")


class Deliveries:
    def __init__(self, nc: Client, subject: str, queue: str) -> None:
        self.nc = nc
        self.subject = subject
        self.queue = queue
        self._sub: Any = None

    async def __aenter__(self) -> Deliveries:
        self._sub = await self.nc.subscribe(self.subject, queue=self.queue)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def __aiter__(self) -> Deliveries:
        return self

    async def __anext__(self) -> Delivery:
        msg = await self._sub.next_msg(timeout=None)
        return self.parse(msg)

    async def next(self, within: float) -> Delivery:
        """The next delivery, or ``TimeoutError`` after ``within`` seconds."""
        try:
            msg = await self._sub.next_msg(timeout=within)
        except NatsTimeoutError:
            raise TimeoutError(f"no delivery on {self.subject} within {within}s") from None
        return self.parse(msg)

    @staticmethod
    def parse(msg: Msg) -> Delivery:
        headers = msg.headers or {}
        codec = MSGPACK if headers.get(CONTENT_TYPE_HEADER) == MSGPACK.content_type else JSON
        event = codec.decode(msg.data)
        return Delivery(
            event=event,
            attempt=headers.get("Esdb-Delivery-Attempt", "1"),
            subscription=headers.get("Esdb-Subscription", ""),
            msg=msg,
        )


@dataclass
class ChannelDelivery:
    """One channel message as a subscriber receives it (the ``{channel, topic, message}`` body);
    ``seq`` is its history position on durable channels, else None."""

    channel: str
    topic: str
    message: Any
    seq: int | None
    subject: str


class ChannelSubscription:
    """Messages of one channel topic (pattern): ``async for m in sub`` or ``await sub.next(within)``;
    ``async with`` closes it. Messages caught up from the history come first; a message seen in
    both the history and live is yielded once (by ``seq``)."""

    def __init__(
        self,
        client: GaterClient,
        channel: str,
        topic: str,
        sub: Any,
        *,
        forward_id: str | None = None,
        expires_at: int | None = None,
        token: str | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.topic = topic
        self.forward_id = forward_id
        self.expires_at = expires_at
        self.token = token  # the subscribing token: it also removes the forwarding
        self.last_seq: int | None = None
        self._sub = sub
        self._backlog: deque[ChannelDelivery] = deque()
        self._seen: deque[int] = deque()
        self._seen_set: set[int] = set()

    def _remember(self, seq: int | None) -> bool:
        """False when ``seq`` was yielded already."""
        if seq is None:
            return True
        if seq in self._seen_set:
            return False
        self._seen.append(seq)
        self._seen_set.add(seq)
        if len(self._seen) > 10_000:
            self._seen_set.discard(self._seen.popleft())
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)
        return True

    async def catch_up(self, after_seq: int, token: str | None = None, *, max_pages: int = 100) -> int:
        """Queue what the channel kept after ``after_seq``; returns how many were queued."""
        n = 0
        for _ in range(max_pages):
            page = await self.client.channel_history(self.channel, self.topic, after_seq, 1000, token)
            for m in page.messages:
                subject = self.client.subjects.channel(m.channel, m.topic)
                self._backlog.append(ChannelDelivery(m.channel, m.topic, m.message, m.seq, subject))
                n += 1
            after_seq = page.last_seq
            if not page.more:
                break
        return n

    @staticmethod
    def parse(msg: Msg) -> ChannelDelivery:
        body = JSON.decode(msg.data)
        seq = (msg.headers or {}).get("Esdb-Seq")
        return ChannelDelivery(
            channel=str(body.get("channel", "")),
            topic=str(body.get("topic", "")),
            message=body.get("message"),
            seq=int(seq) if seq else None,
            subject=msg.subject,
        )

    async def next(self, within: float) -> ChannelDelivery:
        """The next message, or ``TimeoutError`` after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            while self._backlog:
                item = self._backlog.popleft()
                if self._remember(item.seq):
                    return item
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no channel message on {self.channel}/{self.topic} within {within}s")
            try:
                msg = await self._sub.next_msg(timeout=left)
            except NatsTimeoutError:
                raise TimeoutError(f"no channel message on {self.channel}/{self.topic} within {within}s") from None
            item = self.parse(msg)
            if self._remember(item.seq):
                return item

    def __aiter__(self) -> ChannelSubscription:
        return self

    async def __anext__(self) -> ChannelDelivery:
        return await self.next(365 * 86400.0)

    async def close(self) -> None:
        if self.forward_id is not None:
            fid, self.forward_id = self.forward_id, None
            with contextlib.suppress(GatewayError):
                body = {"id": fid, **({"capability_token": self.token} if self.token else {})}
                await self.client.request("_", "channel", "unsubscribe", body)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def __aenter__(self) -> ChannelSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
