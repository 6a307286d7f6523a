"""The operations the benchmark times: gateway requests and their raw JetStream counterparts.

Every op is a small object whose ``__call__`` does one operation and never raises for an
operation failure (it counts it in ``Errors`` and re-synchronises its state instead); only too
many failures in a row abort the run. Payloads are built once, so the client loop spends as
little as possible of the shared CPU.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from esdb_gater.bench.measure import check_stop
from esdb_gater.shared.log.eventlog import H_COUNT, H_VERSION, JSON_CT, encode_events
from esdb_gater.shared.models.stream import EventIn

__all__ = [
    "DirectBatchRead",
    "Errors",
    "GatewayAppend",
    "GatewayAppendMulti",
    "GatewayRead",
    "OrderedConsumerRead",
    "Pipeline",
    "RawAppend",
    "RawAtomicBatch",
    "RawMultiBatch",
    "SingleAppends",
    "ZeroCall",
    "commit_headers",
    "commit_payload",
    "event_json",
]

TIMEOUT: Final = 5.0
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"  # esdb_gater.shared.core.errors.ERROR_CODE_HEADER
H_EXPECT: Final = "Nats-Expected-Last-Subject-Sequence"
EVENT_TYPE: Final = "BenchEvent"
TEXT: Final = "x" * 160  # ~200 B of JSON per event, like the research notes' measurements


def event_json(i: int = 0) -> dict[str, Any]:
    """One event as the gateway's append takes it (and as raw messages carry it)."""
    return {"event_type": EVENT_TYPE, "data": {"i": i, "text": TEXT}}


def commit_payload(version: int) -> bytes:
    """The body of a one-event commit, written by the log's own encoder (esdb_gater.shared.log.eventlog), as the
    stream service would store an append of ``event_json(version)``."""
    event = EventIn.model_construct(
        event_id=None,
        event_type=EVENT_TYPE,
        data={"i": version, "text": TEXT},
        metadata={},
        tags=None,
        data_content_type=JSON_CT,
        metadata_content_type=JSON_CT,
    )
    return encode_events([event], [str(uuid.uuid4())])


def commit_headers(version: int) -> dict[str, str]:
    return {H_VERSION: str(version), H_COUNT: "1"}


class BenchError(RuntimeError):
    pass


class Errors:
    """Failed operations of one run; too many in a row abort it (the service is probably gone)."""

    def __init__(self, limit: int = 25) -> None:
        self.count = 0
        self.in_a_row = 0
        self.limit = limit
        self.samples: list[str] = []

    def ok(self) -> None:
        self.in_a_row = 0

    def add(self, what: str) -> None:
        self.count += 1
        self.in_a_row += 1
        if len(self.samples) < 10:
            self.samples.append(what[:300])
        if self.in_a_row >= self.limit:
            raise BenchError(f"{self.in_a_row} failed operations in a row; last: {what[:300]}")

    def __call__(self) -> int:
        return self.count


async def _request(nc: Client, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Msg:
    return await nc.request(subject, payload, timeout=TIMEOUT, headers=headers)


class GatewayAppend:
    """``esdb.api.<store>.stream.append`` of ``n`` events with the exact expected version."""

    def __init__(self, nc: Client, store: str, stream_id: str, n: int, errors: Errors) -> None:
        self.nc = nc
        self.subject = f"esdb.api.{store}.stream.append"
        self.version_subject = f"esdb.api.{store}.stream.version"
        self.stream_id = stream_id
        self.version = -1  # -1 = "no stream": the stream is new
        self.errors = errors
        events = json.dumps([event_json(i) for i in range(n)], separators=(",", ":"))
        self._head = '{"stream_id":' + json.dumps(stream_id) + ',"expected_version":'
        self._tail = ',"events":' + events + "}"

    def body(self) -> bytes:
        return (self._head + str(self.version) + self._tail).encode()

    async def __call__(self) -> None:
        try:
            msg = await _request(self.nc, self.subject, self.body())
        except Exception as exc:
            self.errors.add(f"append {self.stream_id}: {exc!r}")
            await self._resync()
            return
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            self.errors.add(f"append {self.stream_id}: {msg.data[:200]!r}")
            await self._resync()
            return
        self.version = json.loads(msg.data)["version"]
        self.errors.ok()

    async def _resync(self) -> None:
        body = json.dumps({"stream_id": self.stream_id}).encode()
        try:
            msg = await _request(self.nc, self.version_subject, body)
            self.version = int(json.loads(msg.data)["version"])
        except Exception:  # the next append reports the failure again
            pass


class RawAppend:
    """A JetStream publish (as a request, ack parsed) with Nats-Expected-Last-Subject-Sequence."""

    def __init__(self, nc: Client, subject: str, errors: Errors) -> None:
        self.nc = nc
        self.subject = subject
        self.last_seq = 0
        self.errors = errors
        self.payload = json.dumps(event_json(), separators=(",", ":")).encode()

    async def __call__(self) -> None:
        try:
            msg = await _request(self.nc, self.subject, self.payload, {H_EXPECT: str(self.last_seq)})
            ack = json.loads(msg.data)
        except Exception as exc:
            self.errors.add(f"raw publish {self.subject}: {exc!r}")
            return
        err = ack.get("error")
        if err:
            self.errors.add(f"raw publish {self.subject}: {err}")
            _resync_from_error(self, err)
            return
        self.last_seq = ack["seq"]
        self.errors.ok()


def _resync_from_error(op: RawAppend | RawAtomicBatch, err: dict[str, Any]) -> None:
    desc = str(err.get("description", ""))
    if err.get("err_code") == 10071 and desc.rsplit(":", 1)[-1].strip().isdigit():
        op.last_seq = int(desc.rsplit(":", 1)[-1])


class RawAtomicBatch:
    """An ADR-50 atomic batch of ``n`` messages on one subject: core publishes with Nats-Batch-Id /
    Nats-Batch-Sequence, the expectation on the first, and the last (Nats-Batch-Commit: 1) sent as a
    request whose reply is the batch's ack (research notes §2)."""

    def __init__(self, nc: Client, subject: str, n: int, errors: Errors) -> None:
        self.nc = nc
        self.subject = subject
        self.n = n
        self.last_seq = 0
        self.errors = errors
        self.payloads = [json.dumps(event_json(i), separators=(",", ":")).encode() for i in range(n)]
        self._prefix = uuid.uuid4().hex[:16]
        self._count = 0

    async def __call__(self) -> None:
        self._count += 1
        bid = f"{self._prefix}{self._count}"
        publish = self.nc.publish
        try:
            for i in range(1, self.n):
                headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i)}
                if i == 1:
                    headers[H_EXPECT] = str(self.last_seq)
                await publish(self.subject, self.payloads[i - 1], headers=headers)
            last = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(self.n), "Nats-Batch-Commit": "1"}
            if self.n == 1:
                last[H_EXPECT] = str(self.last_seq)
            msg = await _request(self.nc, self.subject, self.payloads[-1], last)
            ack = json.loads(msg.data)
        except Exception as exc:
            self.errors.add(f"atomic batch {self.subject}: {exc!r}")
            return
        err = ack.get("error")
        if err:
            self.errors.add(f"atomic batch {self.subject}: {err}")
            _resync_from_error(self, err)
            return
        if ack.get("count") != self.n:
            self.errors.add(f"atomic batch {self.subject}: unexpected ack {ack}")
            return
        self.last_seq = ack["seq"]
        self.errors.ok()


class GatewayAppendMulti:
    """``esdb.api.<store>.stream.append_multi``: one event on each of ``streams``, each with the
    exact expected version (issue 12)."""

    def __init__(self, nc: Client, store: str, streams: list[str], errors: Errors) -> None:
        self.nc = nc
        self.subject = f"esdb.api.{store}.stream.append_multi"
        self.version_subject = f"esdb.api.{store}.stream.version"
        self.streams = streams
        self.versions = [-1] * len(streams)
        self.errors = errors
        self._events = json.dumps([event_json()], separators=(",", ":"))

    def body(self) -> bytes:
        parts = [
            '{"stream_id":' + json.dumps(s) + ',"expected_version":' + str(v) + ',"events":' + self._events + "}"
            for s, v in zip(self.streams, self.versions, strict=True)
        ]
        return ('{"appends":[' + ",".join(parts) + "]}").encode()

    async def __call__(self) -> None:
        try:
            msg = await _request(self.nc, self.subject, self.body())
        except Exception as exc:
            self.errors.add(f"append_multi: {exc!r}")
            await self._resync()
            return
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            self.errors.add(f"append_multi: {msg.data[:200]!r}")
            await self._resync()
            return
        self.versions = [r["version"] for r in json.loads(msg.data)["results"]]
        self.errors.ok()

    async def _resync(self) -> None:
        for i, s in enumerate(self.streams):
            try:
                msg = await _request(self.nc, self.version_subject, json.dumps({"stream_id": s}).encode())
                self.versions[i] = int(json.loads(msg.data)["version"])
            except Exception:  # the next call reports the failure again
                pass


class SingleAppends:
    """The same events as ``GatewayAppendMulti``, as one ``stream.append`` per stream, one after
    the other (what a client without append_multi does, without its atomicity)."""

    def __init__(self, nc: Client, store: str, streams: list[str], errors: Errors) -> None:
        self.appends = [GatewayAppend(nc, store, s, 1, errors) for s in streams]

    async def __call__(self) -> None:
        for a in self.appends:
            await a()


class RawMultiBatch:
    """An ADR-50 atomic batch of one message per subject, each with
    Nats-Expected-Last-Subject-Sequence (the raw form of a multi-stream append)."""

    def __init__(self, nc: Client, stream: str, subjects: list[str], errors: Errors) -> None:
        self.nc = nc
        self.stream = stream
        self.subjects = subjects
        self.last = [0] * len(subjects)
        self.errors = errors
        self.payload = json.dumps(event_json(), separators=(",", ":")).encode()
        self._prefix = uuid.uuid4().hex[:16]
        self._count = 0

    async def __call__(self) -> None:
        self._count += 1
        bid = f"{self._prefix}{self._count}"
        n = len(self.subjects)
        try:
            for i in range(n - 1):
                headers = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i + 1), H_EXPECT: str(self.last[i])}
                await self.nc.publish(self.subjects[i], self.payload, headers=headers)
            last = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(n), "Nats-Batch-Commit": "1"}
            last[H_EXPECT] = str(self.last[-1])
            ack = json.loads((await _request(self.nc, self.subjects[-1], self.payload, last)).data)
        except Exception as exc:
            self.errors.add(f"multi-subject batch: {exc!r}")
            return
        if ack.get("error") or ack.get("count") != n:
            self.errors.add(f"multi-subject batch: {ack}")
            await self._resync()
            return
        self.last = list(range(ack["seq"] - n + 1, ack["seq"] + 1))
        self.errors.ok()

    async def _resync(self) -> None:
        for i, s in enumerate(self.subjects):
            try:
                req = json.dumps({"last_by_subj": s}).encode()
                msg = await _request(self.nc, f"$JS.API.DIRECT.GET.{self.stream}", req)
                self.last[i] = int((msg.headers or {}).get("Nats-Sequence", "0"))
            except Exception:  # the next call reports the failure again
                pass


class ZeroCall:
    """One request to the zero-work responder (same body as a single-event gateway append)."""

    def __init__(self, nc: Client, subject: str, payload: bytes, errors: Errors) -> None:
        self.nc = nc
        self.subject = subject
        self.payload = payload
        self.errors = errors

    async def __call__(self) -> None:
        try:
            await _request(self.nc, self.subject, self.payload)
        except Exception as exc:
            self.errors.add(f"zero-work request: {exc!r}")
            return
        self.errors.ok()


class GatewayRead:
    """A gateway read (forward / backward) that must return ``expect`` events."""

    def __init__(self, nc: Client, subject: str, body: dict[str, Any], expect: int, errors: Errors) -> None:
        self.nc = nc
        self.subject = subject
        self.payload = json.dumps(body).encode()
        self.expect = expect
        self.errors = errors
        self.last: list[dict[str, Any]] = []

    async def __call__(self) -> None:
        try:
            msg = await _request(self.nc, self.subject, self.payload)
        except Exception as exc:
            self.errors.add(f"read {self.subject}: {exc!r}")
            return
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            self.errors.add(f"read {self.subject}: {msg.data[:200]!r}")
            return
        events = json.loads(msg.data)["events"]
        if len(events) != self.expect:
            self.errors.add(f"read {self.subject}: {len(events)} events, expected {self.expect}")
            return
        self.last = events
        self.errors.ok()


class DirectBatchRead:
    """Batched Direct Get (ADR-31) by hand: ``{"seq":1,"batch":n,"next_by_subj":subject}`` to
    ``$JS.API.DIRECT.GET.<stream>`` with a reply inbox, read until the Status 204 EOB message.
    Each message's JSON payload is decoded (a client would)."""

    def __init__(self, nc: Client, stream: str, subject: str, n: int, errors: Errors) -> None:
        self.nc = nc
        self.api = f"$JS.API.DIRECT.GET.{stream}"
        self.req = json.dumps({"seq": 1, "batch": n, "next_by_subj": subject}).encode()
        self.n = n
        self.errors = errors
        self._prefix = ""
        self._count = 0
        self._reply = ""
        self._got: list[Any] = []
        self._done: asyncio.Future[str] | None = None

    async def start(self) -> DirectBatchRead:
        self._prefix = self.nc.new_inbox()
        await self.nc.subscribe(self._prefix + ".*", cb=self._on_msg)
        return self

    async def _on_msg(self, msg: Msg) -> None:
        if msg.subject != self._reply:
            return
        hdrs = msg.headers
        if hdrs is not None and "Status" in hdrs:
            if self._done is not None and not self._done.done():
                self._done.set_result(hdrs["Status"])
            return
        self._got.append(json.loads(msg.data))

    async def __call__(self) -> None:
        self._count += 1
        self._reply = f"{self._prefix}.{self._count}"
        self._got = []
        self._done = asyncio.get_running_loop().create_future()
        try:
            await self.nc.publish(self.api, self.req, reply=self._reply)
            status = await asyncio.wait_for(self._done, TIMEOUT)
        except Exception as exc:
            self.errors.add(f"direct batch get: {exc!r}")
            return
        if status != "204" or len(self._got) != self.n:
            self.errors.add(f"direct batch get: status {status}, {len(self._got)} messages")
            return
        self.errors.ok()


class OrderedConsumerRead:
    """nats-py ``js.subscribe(subject, ordered_consumer=True, cb=...)`` until ``n`` messages have
    arrived (payloads decoded), then unsubscribe. Creating the ephemeral consumer is part of the
    read; the server removes it after ``inactive_threshold``."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str, n: int, errors: Errors) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.n = n
        self.errors = errors

    async def __call__(self) -> None:
        got: list[Any] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        n = self.n

        async def on_msg(msg: Msg) -> None:
            got.append(json.loads(msg.data))
            if len(got) >= n and not done.done():
                done.set_result(None)

        sub = None
        try:
            sub = await self.js.subscribe(
                self.subject, stream=self.stream, cb=on_msg, ordered_consumer=True, inactive_threshold=1.0
            )
            await asyncio.wait_for(done, TIMEOUT)
        except Exception as exc:
            self.errors.add(f"ordered consumer: {exc!r}")
            return
        finally:
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    self.errors.add(f"ordered consumer unsubscribe: {exc!r}")
        self.errors.ok()


class Pipeline:
    """Acknowledged JetStream publishes with up to ``window`` in flight (for populating).

    All acks come back on one inbox; an ack carrying ``"error"`` is counted as a failure."""

    def __init__(self, nc: Client, window: int = 2000) -> None:
        self.nc = nc
        self.window = window
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.first_error = b""
        self._inbox = ""
        self._room = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> Pipeline:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_ack)
        return self

    async def _on_ack(self, msg: Msg) -> None:
        self.acked += 1
        if b'"error"' in msg.data:
            self.failed += 1
            if not self.first_error:
                self.first_error = msg.data
        if self.sent - self.acked <= self.window // 2:
            self._room.set()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if self.sent - self.acked >= self.window:
            check_stop()
            self._room.clear()
            await asyncio.wait_for(self._room.wait(), 30)
        self.sent += 1
        await self.nc.publish(subject, data, reply=self._inbox, headers=headers)

    async def finish(self, within: float = 60.0) -> None:
        await self.nc.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.acked < self.sent:
            check_stop()
            if loop.time() > deadline:
                raise BenchError(f"populating: {self.sent - self.acked} publishes not acknowledged")
            await asyncio.sleep(0.01)
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self.failed:
            raise BenchError(f"populating: {self.failed} publishes failed; first: {self.first_error[:300]!r}")
