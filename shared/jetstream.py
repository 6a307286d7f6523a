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
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.errors import (
    ErrorCode,
    GatewayError,
    GatewayTimeoutError,
    InternalError,
    PayloadTooLargeError,
    UnavailableError,
)
from shared.telemetry import client_span

__all__ = [
    "JS_BATCH_LIMIT",
    "FastClient",
    "JetStreamApiError",
    "JetStreamUnavailableError",
    "KvValue",
    "Log",
    "PubAck",
    "StoredMsg",
    "connect",
    "flush_barrier",
    "kv_values",
    "open_kv",
    "parse_ts_ns",
]

# JetStream API error codes we act on (server/errors.json).
ERR_WRONG_LAST_SEQUENCE: Final = 10071
ERR_STREAM_NOT_FOUND: Final = 10059
ERR_INFLIGHT_SAME_SUBJECT: Final = 10164
ERR_MAX_PAYLOAD: Final = 10054

JS_BATCH_LIMIT: Final = 1000  # messages per Direct Get batch request we ask for

H_SEQ: Final = "Nats-Sequence"
H_SUBJECT: Final = "Nats-Subject"
H_TS: Final = "Nats-Time-Stamp"
H_NUM_PENDING: Final = "Nats-Num-Pending"
H_LAST_SEQ: Final = "Nats-Last-Sequence"
H_STATUS: Final = "Status"


_HEADER_WS = re.compile(r"\s")


class FastClient(Client):
    """nats-py's client with a quicker header parser.

    Every Direct Get reply carries six or more headers, and nats-py 2.16 checks each header name
    for whitespace one character at a time through a generator; a read of 1000 events spent
    ~15% of the service's time there. Same rules, one regex call per name."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _HEADER_WS.search(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    def _build_message(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> Msg:
        """nats-py decodes subject and reply strictly, and a UnicodeDecodeError in its read loop
        stops the loop for good: one raw ``PUB esdb.api.\xff.stream.version`` from any client
        silenced every subscription of the service's connection. A subject that is not UTF-8 is
        kept with its bad bytes as lone surrogates (so the request is still answered, e.g. an
        ``invalid_request`` for its store token); a reply that is not UTF-8 is dropped (issue 10,
        docs/adr/0013-reply-and-target-subjects.md)."""
        try:
            return super()._build_message(sid, subject, reply, data, headers)  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            try:
                reply_text = bytes(reply).decode()
            except UnicodeDecodeError:
                reply_text = ""
            return self.msg_class(
                subject=bytes(subject).decode("utf-8", "surrogateescape"),
                reply=reply_text,
                data=data,
                headers=headers,
                _client=self,
                _sid=sid,
            )

    async def flush(self, timeout: int = 10) -> None:  # noqa: ASYNC109  (nats-py's signature)
        """A real barrier: see ``flush_barrier``."""
        await flush_barrier(self, timeout, _flush=super().flush)


async def flush_barrier(nc: Client, wait_s: float = 10.0, *, _flush: Any = None) -> None:
    """``nc.flush()`` that really waits for everything sent before it.

    nats-py 2.16 writes the PING of ``flush()`` to the socket at once but leaves other commands
    (SUB, PUB) in a buffer for its flusher task, so the PONG can arrive before a SUB sent just
    earlier reaches the server: a service "started" that way can answer ``no responders`` for a
    few milliseconds, and a fresh subscription can miss a message. Hand the buffer to the
    flusher and wait for it first, then PING."""
    flush_queue = getattr(nc, "_flush_queue", None)
    flusher = getattr(nc, "_flusher_task", None)
    pending = getattr(nc, "_pending_data_size", 0) > 0
    if nc.is_connected and pending and flush_queue is not None and flusher is not None and not flusher.done():
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await flush_queue.put(written)
        await asyncio.wait_for(written, wait_s)
    await (_flush or nc.flush)(int(wait_s) or 1)


async def open_kv(js: Any, config: Any) -> Any:
    """The KV bucket ``config.bucket``, created with ``config`` when it does not exist yet
    (creating an existing bucket with the same config is harmless, so racing instances agree)."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config)


async def connect(url: str, **options: Any) -> FastClient:
    """Connect a FastClient; ``url`` may list several servers separated by commas."""
    nc = FastClient()
    servers = [u.strip() for u in url.split(",") if u.strip()]
    await nc.connect(servers=servers, **options)
    return nc


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


@dataclass(slots=True, frozen=True)
class PubAck:
    seq: int
    duplicate: bool


@dataclass(slots=True, frozen=True)
class StoredMsg:
    subject: str
    seq: int
    ts_ns: int
    headers: dict[str, str]
    data: bytes


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


class Log:
    """JetStream calls of the event log, over one NATS connection."""

    def __init__(self, nc: Client, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout
        self._inbox_prefix = ""
        self._sub: Subscription | None = None
        self._pending: dict[str, tuple[list[Msg], asyncio.Future[Msg]]] = {}
        self._next = 0

    async def start(self) -> None:
        """Subscribe the reply inbox that batched Direct Gets answer on."""
        self._inbox_prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox_prefix + ".*", cb=self._on_reply)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_reply(self, msg: Msg) -> None:
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
        try:
            with client_span(_span_name(subject), {"messaging.system": "nats", "messaging.destination.name": subject}):
                return await self.nc.request(subject, payload, timeout=self.timeout, headers=headers)
        except NoRespondersError:
            raise UnavailableError("JetStream did not answer (no responders)", details={"subject": subject}) from None
        except NatsTimeoutError:
            raise GatewayTimeoutError("JetStream did not answer in time", details={"subject": subject}) from None
        except MaxPayloadError:
            raise PayloadTooLargeError(
                "the record is larger than the server's max_payload", details={"size": len(payload)}
            ) from None

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A ``$JS.API.*`` JSON call; raises on an error reply."""
        msg = await self._request(subject, json.dumps(body or {}).encode())
        reply: dict[str, Any] = json.loads(msg.data)
        _raise_api_error(reply)
        return reply

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        msg = await self._request(subject, payload, headers)
        try:
            body = json.loads(msg.data)
        except ValueError:
            raise InternalError("unexpected publish acknowledgement") from None
        _raise_api_error(body)
        return PubAck(seq=int(body["seq"]), duplicate=bool(body.get("duplicate", False)))

    async def publish_ack(self, subject: str, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """Publish and return the whole PubAck body (a counter stream's ack adds ``val``)."""
        msg = await self._request(subject, payload, headers)
        try:
            body: dict[str, Any] = json.loads(msg.data)
        except ValueError:
            raise InternalError("unexpected publish acknowledgement") from None
        _raise_api_error(body)
        return body

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

    async def direct_get(self, stream: str, req: dict[str, Any]) -> StoredMsg | None:
        """One message by ``seq`` / ``last_by_subj`` / ``next_by_subj`` / ``start_time``; None if none."""
        msg = await self._request(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode())
        hdrs = msg.headers or {}
        status = hdrs.get(H_STATUS)
        if status is not None:
            if status == "404":
                return None
            raise JetStreamApiError(0, f"direct get failed: {status} {hdrs.get('Description', '')}")
        return self._stored(msg)

    async def direct_batch(self, stream: str, req: dict[str, Any]) -> tuple[list[StoredMsg], int]:
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

    async def leader_get(self, stream: str, req: dict[str, Any]) -> StoredMsg | None:
        """``STREAM.MSG.GET``: answered by the stream leader, so it sees every acknowledged write
        (Direct Get may be answered by a lagging follower in a cluster)."""
        msg = await self._request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps(req).encode())
        body = json.loads(msg.data)
        err = body.get("error")
        if err:
            if int(err.get("err_code", 0)) == 10037:  # no message found
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


# --- KV listings without a consumer ---------------------------------------------------------------

KV_MULTI_LAST_LIMIT: Final = 1024  # subjects per multi_last Direct Get the server answers


@dataclass(slots=True, frozen=True)
class KvValue:
    key: str
    value: bytes
    revision: int


async def kv_values(log: Log, bucket: str, key_filter: str) -> list[KvValue]:
    """The live keys of a KV bucket matching ``key_filter`` (e.g. ``def.>``) and their values.

    nats-py's ``kv.watch`` creates an ephemeral consumer per listing, which the server keeps for
    a while after it stops; services that list their definitions every second would keep dozens
    alive. This is ``STREAM.INFO`` with a subject filter (the keys, one request per 100 000) and
    batched Direct Gets ``multi_last`` (1024 values per request). Keys whose last message is a
    delete or purge marker are left out."""
    stream = f"KV_{bucket}"
    head = f"$KV.{bucket}."
    subjects: list[str] = []
    offset = 0
    while True:
        try:
            si = await log.api(
                f"$JS.API.STREAM.INFO.{stream}", {"subjects_filter": head + key_filter, "offset": offset}
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return []
            raise
        page = list(si.get("state", {}).get("subjects") or {})
        subjects.extend(page)
        offset += len(page)
        if not page or offset >= int(si.get("total", len(page))):
            break
    out: list[KvValue] = []
    for i in range(0, len(subjects), KV_MULTI_LAST_LIMIT):
        group = subjects[i : i + KV_MULTI_LAST_LIMIT]
        msgs, _ = await log.direct_batch(stream, {"multi_last": group, "batch": len(group)})
        for sm in msgs:
            if sm.headers.get("KV-Operation") in ("DEL", "PURGE") or not sm.data:
                continue
            out.append(KvValue(sm.subject[len(head) :], sm.data, sm.seq))
    return out
