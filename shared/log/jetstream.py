"""Thin, fast JetStream primitives shared by the services' ``store.py`` modules.

nats-py 2.x has no batch Direct Get (ADR-31) and its ``js.publish`` builds objects we do not
need on the hot path, so the few calls the event log makes are spelled here once, over raw
request/reply: publish with expectation headers, single and batched Direct Get, and the
leader-served ``STREAM.MSG.GET``. JetStream API error codes are turned into our error tree here
(and only here).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.shared.core.connection import FastClient, connect, flush_barrier
from esdb_gater.shared.core.errors import (
    ErrorCode,
    GatewayError,
    GatewayTimeoutError,
    InternalError,
    PayloadTooLargeError,
    UnavailableError,
)
from esdb_gater.shared.core.telemetry import client_span
from esdb_gater.shared.log.port import LogPort, MsgGet, PubAck, StoredMsg, StreamInfo, StreamList, StreamNames

__all__ = [
    "JS_BATCH_LIMIT",
    "FastClient",
    "JetStreamApiError",
    "JetStreamUnavailableError",
    "Log",
    "PubAck",
    "StoredMsg",
    "connect",
    "consistent_get",
    "consumer_info",
    "create_consumer",
    "create_stream",
    "delete_consumer",
    "flush_barrier",
    "open_kv",
    "parse_ts_ns",
    "publish_batch",
]

# Every JetStream API error code the gateway acts on (nats-server's server/errors.json), here
# and nowhere else.
ERR_BAD_REQUEST: Final = 10003
ERR_CONSUMER_NOT_FOUND: Final = 10014
ERR_INSUFFICIENT_RESOURCES: Final = 10023  # the server has no room for the stream
ERR_NO_MESSAGE_FOUND: Final = 10037
ERR_STREAM_INVALID_CONFIG: Final = 10052
ERR_MAX_PAYLOAD: Final = 10054
ERR_STREAM_NAME_IN_USE: Final = 10058  # created meanwhile by another instance (with another config)
ERR_STREAM_NOT_FOUND: Final = 10059
ERR_SUBJECTS_OVERLAP: Final = 10065
ERR_WRONG_LAST_SEQUENCE: Final = 10071
ERR_REPLICAS_NOT_SUPPORTED: Final = 10074  # replicas > 1 on a server that is not clustered
ERR_INFLIGHT_SAME_SUBJECT: Final = 10164
ERR_ATOMIC_DISABLED: Final = 10174  # atomic publish is disabled (the stream lacks allow_atomic)
ERR_BATCH_INCOMPLETE: Final = 10176  # atomic publish batch is incomplete (a message went missing)
ERR_BATCH_TOO_LARGE: Final = 10199  # atomic publish batch is too large
ERR_BATCH_DUPLICATE_MSG_ID: Final = 10201  # atomic publish batch contains duplicate message id (nothing stored)

JS_BATCH_LIMIT: Final = 1000  # messages per Direct Get batch request we ask for

H_SEQ: Final = "Nats-Sequence"
H_SUBJECT: Final = "Nats-Subject"
H_TS: Final = "Nats-Time-Stamp"
H_NUM_PENDING: Final = "Nats-Num-Pending"
H_LAST_SEQ: Final = "Nats-Last-Sequence"
H_STATUS: Final = "Status"
H_MSG_ID: Final = "Nats-Msg-Id"  # de-duplication inside the stream's duplicate window
H_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"  # compare-and-set on a subject
H_BATCH_ID: Final = "Nats-Batch-Id"  # ADR-50 atomic batch publish
H_BATCH_SEQ: Final = "Nats-Batch-Sequence"
H_BATCH_COMMIT: Final = "Nats-Batch-Commit"


async def open_kv(js: Any, config: Any) -> Any:
    """The KV bucket ``config.bucket``, created with ``config`` when it does not exist yet
    (creating an existing bucket with the same config is harmless, so racing instances agree)."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config)


class JetStreamApiError(GatewayError):
    """A JetStream API error we did not map to a wire error; carries ``err_code``."""

    def __init__(self, err_code: int, description: str, status: int = 500) -> None:
        super().__init__(f"jetstream: {description}", details={"err_code": err_code})
        self.err_code = err_code
        self.description = description
        self.js_status = status


class JetStreamUnavailableError(JetStreamApiError):
    """A JetStream API error with status 503 (temporarily unavailable, insufficient resources):
    answered as ``unavailable`` and retryable."""

    code = ErrorCode.UNAVAILABLE
    status = 503
    retryable = True


_minute_cache: dict[str, int] = {}


def parse_ts_ns(value: str) -> int:
    """Nanoseconds since the epoch from JetStream's RFC 3339 timestamp (UTC, up to 9 digits)."""
    # "2026-11-29T10:00:00.123456789Z": datetime parses at most 6 digits, and is slow on a
    # read's hot path, so the minute is parsed once and cached.
    minute = value[:16]
    base = _minute_cache.get(minute)
    if base is None:
        base = int(datetime.fromisoformat(minute + ":00").replace(tzinfo=UTC).timestamp())
        if len(_minute_cache) > 1024:
            _minute_cache.clear()
        _minute_cache[minute] = base
    secs = int(value[17:19])
    frac = value[20:].rstrip("Z") if len(value) > 20 and value[19] == "." else ""
    return (base + secs) * 1_000_000_000 + (int((frac + "000000000")[:9]) if frac else 0)


def _raise_api_error(body: dict[str, Any]) -> None:
    err = body.get("error")
    if not err:
        return
    code = int(err.get("err_code", 0))
    desc = str(err.get("description", "jetstream error"))
    if code == ERR_MAX_PAYLOAD:
        raise PayloadTooLargeError("the append is larger than the store accepts", details={"reason": desc})
    status = int(err.get("code", 500))
    if status == 503:  # e.g. no leader during an election: the caller may try again
        raise JetStreamUnavailableError(code, desc, status)
    raise JetStreamApiError(code, desc, status)


def _ack_body(msg: Msg) -> dict[str, Any]:
    """The JSON body of a publish acknowledgement; raises on an error reply."""
    try:
        body = json.loads(msg.data)
    except ValueError:
        raise InternalError("unexpected publish acknowledgement") from None
    if not isinstance(body, dict):
        raise InternalError("unexpected publish acknowledgement")
    _raise_api_error(body)
    return body


def _expire(answer: asyncio.Future[Msg]) -> None:
    if not answer.done():
        answer.set_exception(NatsTimeoutError())


class Log:
    """JetStream calls of the event log, over one NATS connection."""

    def __init__(self, nc: Client, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout
        self._inbox_prefix = ""
        self._sub: Subscription | None = None
        self._pending: dict[str, tuple[list[Msg], asyncio.Future[Msg]]] = {}
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._next = 0

    async def start(self) -> None:
        """Subscribe the reply inbox that JetStream answers on (every request and batched Direct
        Get of this log). On a ``FastClient`` the replies resolve their futures in the read loop."""
        self._inbox_prefix = self.nc.new_inbox()
        inline = getattr(self.nc, "subscribe_inline", None)
        if inline is not None:
            self._sub = await inline(self._inbox_prefix + ".*", self._reply)
        else:
            self._sub = await self.nc.subscribe(self._inbox_prefix + ".*", cb=self._on_reply)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_reply(self, msg: Msg) -> None:
        self._reply(msg)

    def _reply(self, msg: Msg) -> None:
        waiter = self._waiting.get(msg.subject)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(msg)
            return
        pending = self._pending.get(msg.subject)
        if pending is None:
            return
        msgs, done = pending
        hdrs = msg.headers
        if hdrs is not None and H_STATUS in hdrs:
            if not done.done():
                done.set_result(msg)
        else:
            msgs.append(msg)

    # --- requests ---------------------------------------------------------------------------
    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
        headers = headers or None  # an empty header block would be stored with the message (16 B)
        try:
            with client_span(_span_name(subject), {"messaging.system": "nats", "messaging.destination.name": subject}):
                if self._sub is None:  # not started: nats-py's request
                    return await self.nc.request(subject, payload, timeout=self.timeout, headers=headers)
                msg = await self._ask(subject, payload, headers)
        except NoRespondersError:
            raise UnavailableError("JetStream did not answer (no responders)", details={"subject": subject}) from None
        except NatsTimeoutError:
            raise GatewayTimeoutError("JetStream did not answer in time", details={"subject": subject}) from None
        except MaxPayloadError:
            raise PayloadTooLargeError(
                "the record is larger than the server's max_payload", details={"size": len(payload)}
            ) from None
        if msg.headers is not None and msg.headers.get(H_STATUS) == "503" and not msg.data:
            raise UnavailableError("JetStream did not answer (no responders)", details={"subject": subject})
        return msg

    async def _ask(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Msg:
        """One request answered on our inbox: nats-py's ``request`` draws a NUID and runs
        ``wait_for`` per call; a counter and a timer handle do the same for less."""
        self._next += 1
        reply = f"{self._inbox_prefix}.{self._next}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Msg] = loop.create_future()
        self._waiting[reply] = answer
        timer = loop.call_later(self.timeout, _expire, answer)
        try:
            await self.nc.publish(subject, payload, reply=reply, headers=headers)
            return await answer
        finally:
            timer.cancel()
            del self._waiting[reply]

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A ``$JS.API.*`` JSON call; raises on an error reply."""
        msg = await self._request(subject, json.dumps(body or {}).encode())
        reply: dict[str, Any] = json.loads(msg.data)
        _raise_api_error(reply)
        return reply

    # --- streams (the typed calls of LogPort) ------------------------------------------------------
    async def stream_info(self, stream: str, *, subjects_filter: str | None = None, offset: int = 0) -> StreamInfo:
        body = {"subjects_filter": subjects_filter, "offset": offset} if subjects_filter else None
        return cast(StreamInfo, await self.api(f"$JS.API.STREAM.INFO.{stream}", body))

    async def add_stream(self, config: Mapping[str, Any]) -> StreamInfo:
        return cast(StreamInfo, await self.api(f"$JS.API.STREAM.CREATE.{config['name']}", dict(config)))

    async def stream_names(self, *, subject: str | None = None, offset: int = 0) -> StreamNames:
        body: dict[str, Any] = {"offset": offset} if subject is None else {"offset": offset, "subject": subject}
        return cast(StreamNames, await self.api("$JS.API.STREAM.NAMES", body))

    async def list_streams(self, *, subject: str | None = None, offset: int = 0) -> StreamList:
        body: dict[str, Any] = {"offset": offset} if subject is None else {"offset": offset, "subject": subject}
        return cast(StreamList, await self.api("$JS.API.STREAM.LIST", body))

    async def purge(
        self, stream: str, *, subject: str | None = None, seq: int | None = None, keep: int | None = None
    ) -> int:
        body: dict[str, Any] = {}
        if subject is not None:
            body["filter"] = subject
        if seq is not None:
            body["seq"] = seq
        if keep is not None:
            body["keep"] = keep
        reply = await self.api(f"$JS.API.STREAM.PURGE.{stream}", body)
        return int(reply.get("purged", 0))

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        body = await self.publish_ack(subject, payload, headers)
        return PubAck(seq=int(body["seq"]), duplicate=bool(body.get("duplicate", False)))

    async def publish_ack(self, subject: str, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """Publish and return the whole PubAck body (a counter stream's ack adds ``val``, an
        atomic batch's commit ``count``); raises on an error reply."""
        return _ack_body(await self._request(subject, payload, headers))

    # --- reads ------------------------------------------------------------------------------
    @staticmethod
    def _stored(msg: Msg) -> StoredMsg | None:
        hdrs = msg.headers or {}
        if H_STATUS in hdrs or H_SEQ not in hdrs:
            return None
        return StoredMsg(
            subject=hdrs[H_SUBJECT],
            seq=int(hdrs[H_SEQ]),
            ts_ns=parse_ts_ns(hdrs[H_TS]),
            headers=hdrs,
            data=msg.data,
        )

    async def direct_get(self, stream: str, req: Mapping[str, Any]) -> StoredMsg | None:
        """One message by ``seq`` / ``last_by_subj`` / ``next_by_subj`` / ``start_time``; None if none."""
        msg = await self._request(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode())
        hdrs = msg.headers or {}
        status = hdrs.get(H_STATUS)
        if status is not None:
            if status == "404":
                return None
            raise JetStreamApiError(0, f"direct get failed: {status} {hdrs.get('Description', '')}")
        return self._stored(msg)

    async def direct_batch(self, stream: str, req: Mapping[str, Any]) -> tuple[list[StoredMsg], int]:
        """A batched Direct Get (ADR-31); returns the messages and the server's pending count.

        Replies arrive on our inbox and are gathered by ``_on_reply`` until the status message
        (204 end of batch, 404 nothing, or an error) resolves the future: one wake-up per batch."""
        self._next += 1
        reply = f"{self._inbox_prefix}.{self._next}"
        msgs: list[Msg] = []
        done: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[reply] = (msgs, done)
        try:
            await self.nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=reply)
            try:
                end = await asyncio.wait_for(done, self.timeout)
            except TimeoutError:
                raise GatewayTimeoutError("JetStream direct get timed out", details={"stream": stream}) from None
        finally:
            self._pending.pop(reply, None)
        hdrs = end.headers or {}
        status = hdrs.get(H_STATUS)
        if status == "503":
            raise UnavailableError("JetStream did not answer (no responders)", details={"stream": stream})
        if status not in ("204", "404"):
            raise JetStreamApiError(0, f"direct get failed: {status} {hdrs.get('Description', '')}")
        out = [sm for sm in map(self._stored, msgs) if sm is not None]
        return out, int(hdrs.get(H_NUM_PENDING, "0")) if status == "204" else 0

    async def leader_get(self, stream: str, req: Mapping[str, Any]) -> StoredMsg | None:
        """``STREAM.MSG.GET``: answered by the stream leader, so it sees every acknowledged write
        (Direct Get may be answered by a lagging follower in a cluster)."""
        msg = await self._request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps(req).encode())
        body = json.loads(msg.data)
        err = body.get("error")
        if err:
            if int(err.get("err_code", 0)) == ERR_NO_MESSAGE_FOUND:
                return None
            _raise_api_error(body)
        m = body["message"]
        headers: dict[str, str] = {}
        if m.get("hdrs"):
            headers = _parse_headers(base64.b64decode(m["hdrs"]))
        ts = m["time"]
        return StoredMsg(
            subject=m["subject"],
            seq=int(m["seq"]),
            ts_ns=parse_ts_ns(ts),
            headers=headers,
            data=base64.b64decode(m.get("data") or ""),
        )


_LOG_IS_A_LOG_PORT: type[LogPort] = Log  # mypy checks that Log implements the port


def _span_name(subject: str) -> str:
    """``jetstream STREAM.INFO``, ``jetstream DIRECT.GET``, ``jetstream publish``: few distinct names."""
    if subject.startswith("$JS.API."):
        parts = subject.split(".")
        return "jetstream " + ".".join(parts[2:4])
    return "jetstream publish" if ".log." in subject or ".ix." in subject else "nats request"


def _parse_headers(raw: bytes) -> dict[str, str]:
    lines = raw.decode().split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


# --- small helpers over Log -------------------------------------------------------------------------


async def create_stream(log: LogPort, config: Mapping[str, Any]) -> None:
    """``STREAM.CREATE`` with ``config``; a stream of that name that exists already (made
    meanwhile by another instance, maybe with another config) is kept."""
    try:
        await log.add_stream(config)
    except JetStreamApiError as exc:
        if exc.err_code != ERR_STREAM_NAME_IN_USE:
            raise


async def consistent_get(log: LogPort, stream: str, req: MsgGet, replicas: int) -> StoredMsg | None:
    """One message that reflects every acknowledged write: Direct Get on a single replica, the
    leader's ``STREAM.MSG.GET`` when the stream has more (a follower may lag behind)."""
    if replicas > 1:
        return await log.leader_get(stream, req)
    return await log.direct_get(stream, req)


async def create_consumer(log: Log, stream: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """``CONSUMER.CREATE`` of a named consumer (``action: create``: the same config again is
    fine, another config for that name is an error); returns its info."""
    return await log.api(
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config, "action": "create"}
    )


async def consumer_info(log: Log, stream: str, name: str) -> dict[str, Any] | None:
    """``CONSUMER.INFO``; None when the consumer or its stream does not exist."""
    try:
        return await log.api(f"$JS.API.CONSUMER.INFO.{stream}.{name}")
    except JetStreamApiError as exc:
        if exc.err_code in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
            return None
        raise


async def delete_consumer(log: Log, stream: str, name: str) -> None:
    """``CONSUMER.DELETE``; a consumer (or stream) that does not exist is fine."""
    try:
        await log.api(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
    except JetStreamApiError as exc:
        if exc.err_code not in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
            raise


async def publish_batch(log: Log, msgs: Sequence[tuple[str, bytes, dict[str, str]]]) -> tuple[int, int]:
    """Store ``msgs`` (subject, payload, headers) as one ADR-50 atomic batch: all or none, at
    consecutive sequences. Returns (sequence of the last, count). Expectation headers are checked at
    the commit against the state before the batch; any failure is raised by the commit's reply
    (``JetStreamApiError``), nothing stored. The stream needs ``allow_atomic``."""
    batch_id = uuid.uuid4().hex
    n = len(msgs)
    for i, (subject, payload, headers) in enumerate(msgs[:-1], 1):
        try:
            await log.nc.publish(subject, payload, headers={**headers, H_BATCH_ID: batch_id, H_BATCH_SEQ: str(i)})
        except MaxPayloadError:
            raise PayloadTooLargeError(
                "the record is larger than the server's max_payload", details={"size": len(payload)}
            ) from None
    subject, payload, headers = msgs[-1]
    last = {**headers, H_BATCH_ID: batch_id, H_BATCH_SEQ: str(n), H_BATCH_COMMIT: "1"}
    body = await log.publish_ack(subject, payload, last)
    return int(body["seq"]), int(body.get("count", n))
