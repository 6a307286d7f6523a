"""The adapter between NATS and handlers: bytes → model → handler → model → bytes.

Handlers are ``async def op(req: OpRequest, ctx: Ctx) -> OpResponse`` and never see bytes,
headers, codecs or spans. This module, once for every service:

* registers the service with the NATS micro protocol (ADR-32, ``nats.micro``), one endpoint per
  op on ``<prefix>.api.*.<service>.<op>`` in the service's queue group;
* picks the codec from ``Content-Type``, validates the body with the op's pydantic model, and
  turns every failure into the error envelope plus the ADR-32 error headers;
* continues the caller's ``traceparent`` in a span and records duration/error metrics;
* runs requests concurrently (nats-py calls a subscription's callback one message at a time, so
  each request becomes a task, bounded by ``max_in_flight``) and drains them on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Endpoint, Service
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec, codec_for
from esdb_gater.shared.core.errors import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    GatewayError,
    InternalError,
    InvalidRequestError,
    PayloadTooLargeError,
    StoreNotFoundError,
)
from esdb_gater.shared.core.subjects import STORE_RE, Subjects
from esdb_gater.shared.core.telemetry import (
    REQUEST_ERROR,
    REQUEST_START,
    REQUEST_STOP,
    emit,
    extract_context,
    instruments,
    metering,
    system_time_ms,
    tracer,
)
from esdb_gater.shared.core.telemetry import active as telemetry_active
from esdb_gater.shared.models.common import Response
from esdb_gater.shared.security.authz import Authz

__all__ = [
    "DEFAULT_REPLY_PREFIXES",
    "Op",
    "RunningService",
    "ServiceSpec",
    "drop_reply",
    "own_inbox",
    "reply_allowed",
    "schema_metadata",
    "start_service",
    "validation_details",
]

log = logging.getLogger(__name__)

# the default of settings.security.reply_prefixes: NATS inboxes, and replies across accounts
DEFAULT_REPLY_PREFIXES: Final = ("_INBOX.", "_R_.")

StoreScope = str  # "store" (a real store id is required) or "global" (store token "_")

CtxT = TypeVar("CtxT")


@dataclass(frozen=True)
class Op(Generic[CtxT]):
    """One subject: op name, handler, request and response models."""

    name: str
    handler: Callable[[Any, CtxT], Awaitable[BaseModel]]
    request: type[BaseModel]
    response: type[BaseModel]
    description: str = ""
    scope: StoreScope = "store"
    token: str | None = None  # the <service> subject token, when not the service's own
    internal: bool = False  # on <prefix>.internal.*.<token>.<op>: services only (ADR 0016)


@dataclass(frozen=True)
class ServiceSpec(Generic[CtxT]):
    """A service: its ADR-32 name, the subject token of its ops, and the op table."""

    name: str  # ADR-32 service name, e.g. "esdb-stream"
    token: str  # the <service> token in <prefix>.api.<store>.<service>.<op>
    version: str
    description: str
    ops: list[Op[CtxT]]
    make_ctx: Callable[[str], CtxT] = field(repr=False)


@dataclass
class RunningService:
    service: Service
    tasks: set[asyncio.Task[None]]

    async def stop(self) -> None:
        """Stop taking requests, then let the ones in flight finish."""
        await self.service.stop()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=10)


def validation_details(exc: ValidationError) -> dict[str, Any]:
    errors = []
    for e in exc.errors(include_url=False, include_input=False)[:20]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        errors.append({"field": loc or "body", "reason": e.get("msg", "invalid")})
    first = errors[0] if errors else {"field": "body", "reason": "invalid"}
    return {"field": first["field"], "reason": first["reason"], "errors": errors}


def _reply_headers(codec: Codec) -> dict[str, str] | None:
    return {CONTENT_TYPE_HEADER: MSGPACK.content_type} if codec is MSGPACK else None


def _plain(text: str) -> str:
    """``text`` as something every codec and a NATS header can carry (lone surrogates replaced)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _error_body(codec: Codec, err: GatewayError) -> bytes:
    """The error envelope in ``codec``; when it cannot be encoded (details holding a lone
    surrogate or an object no codec knows), the same code and a plain message without details,
    which always can be: every input gets a reply (issue 10)."""
    try:
        return codec.encode(err.to_envelope())
    except Exception:
        log.warning("error reply %s could not be encoded; sending it without details", err.code.value)
        plain: dict[str, Any] = {"code": err.code.value, "message": _plain(err.message), "retryable": err.retryable}
        return codec.encode({"error": {**plain, "details": {}}})


async def _send_error(msg: Msg, codec: Codec, err: GatewayError) -> None:
    headers = {
        ERROR_HEADER: _plain(err.message).replace("\r", " ").replace("\n", " ")[:200],
        ERROR_CODE_HEADER: str(err.status),
    }
    if codec is MSGPACK:
        headers[CONTENT_TYPE_HEADER] = MSGPACK.content_type
    await msg._client.publish(msg.reply, _error_body(codec, err), headers=headers)


DROP_LOG_KEYS: Final = 1024


class _DropLog:
    """Logs a refused reply subject once per key (op and the subject's first two tokens: what a
    client controls), remembering at most ``DROP_LOG_KEYS`` keys (least recently seen go first)."""

    def __init__(self, size: int = DROP_LOG_KEYS) -> None:
        self.size = size
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, op: str, subject: str) -> bool:
        key = (op, ".".join(subject.split(".", 2)[:2])[:128])
        if key in self.seen:
            self.seen.move_to_end(key)
            return False
        self.seen[key] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return True


_drops: Final = _DropLog()


def reply_allowed(reply: str, prefixes: Sequence[str]) -> bool:
    """A service answers only reply subjects under the allowed inbox prefixes
    (``security.reply_prefixes``; docs/adr/0013-reply-and-target-subjects.md)."""
    return reply.startswith(tuple(prefixes))


def own_inbox(nc: Client) -> str:
    """The start of the connection's own inboxes (``_INBOX.`` unless it was connected with
    another ``inbox_prefix``): calls between services are answered there."""
    return bytes(getattr(nc, "_inbox_prefix", b"_INBOX")).decode("ascii", "replace") + "."


def drop_reply(op: str, reply: str, endpoint: Endpoint | None = None) -> None:
    """Count (``esdb.requests.dropped``, reason reply_subject; ``$SRV.STATS`` errors) and log once
    a request whose reply subject is refused. Nothing is published."""
    instruments().dropped.add(1, {"op": op, "reason": "reply_subject"})
    if endpoint is not None:
        endpoint._num_errors += 1
        endpoint._last_error = "403:reply_subject"  # type: ignore[assignment]
    if _drops.first(op, reply):
        log.warning(
            "%s: dropped a request whose reply subject %r is not under an allowed prefix (logged once per key)",
            op,
            _plain(reply)[:200],
        )


def _record(endpoint: Endpoint | None, elapsed_ns: int, err: GatewayError | None) -> None:
    """Keep ``$SRV.STATS`` right although handlers run as tasks. nats.micro measures only the
    callback (which just starts the task) and counts errors only for raised exceptions, so we
    update its per-endpoint counters here; they are plain attributes of ``Endpoint``."""
    if endpoint is None:
        return
    endpoint._processing_time += elapsed_ns
    if endpoint._num_requests:
        endpoint._average_processing_time = int(endpoint._processing_time / endpoint._num_requests)
    if err is not None:
        endpoint._num_errors += 1
        endpoint._last_error = f"{err.status}:{err.code.value}"  # type: ignore[assignment]


class _Slots:
    """At most ``size`` requests of a service in flight: a semaphore whose free slot can also be
    taken without awaiting (the read loop's inline path, which must never wait)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():  # handed over just as we were cancelled
                self.give()
            raise

    def give(self) -> None:
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the oldest waiter
                return
        self.free += 1


class _Dispatcher(Generic[CtxT]):
    def __init__(
        self,
        spec: ServiceSpec[CtxT],
        op: Op[CtxT],
        subjects: Subjects,
        slots: _Slots,
        tasks: set[asyncio.Task[None]],
        reply_prefixes: Sequence[str] = DEFAULT_REPLY_PREFIXES,
    ) -> None:
        self.reply_prefixes = tuple(reply_prefixes)
        self.spec = spec
        self.op = op
        self.subjects = subjects
        self.slots = slots
        self.tasks = tasks
        self.endpoint: Endpoint | None = None
        self.span_name: Final = f"{op.token or spec.token}.{op.name}"
        self.authz: Authz | None = None  # capability checks (shared/security/authz.py); set by start_service

    async def __call__(self, req: MicroRequest) -> None:
        """nats.micro's callback: requests the inline path left to it (no free slot)."""
        await self.slots.take()
        self._start(req._msg)

    def inline(self, msg: Msg) -> bool:
        """Called in the connection's read loop (``FastClient.inline``): start the request's task
        at once when a slot is free, else leave it to the endpoint's queue and ``__call__``."""
        if not self.slots.try_take():
            return False
        if self.endpoint is not None:
            self.endpoint._num_requests += 1  # what nats.micro's own path counts
        self._start(msg)
        return True

    def _start(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.give()

    async def _serve(self, msg: Msg, store: str, span: trace.Span | None) -> GatewayError | None:
        """Decode, validate, call the handler, reply; returns the error that was answered.
        Emits request start and stop/error (docs/telemetry.md) when anything listens."""
        codec: Codec = JSON
        err: GatewayError | None = None
        observed = telemetry_active()
        if observed:
            started = time.perf_counter_ns()
            emit(REQUEST_START, {"system_time": system_time_ms()}, self._meta(store))
        try:
            codec = codec_for(msg.headers)
            if self.op.scope == "global":
                if store != "_":
                    raise StoreNotFoundError(
                        f"{self.span_name} is not store-scoped; use the store token '_'",
                        details={"store": store},
                    )
            elif store == "_" or not STORE_RE.match(store):
                raise InvalidRequestError(
                    "store id must match [A-Za-z0-9_-]{1,64} (and '_' is reserved for store-less ops)",
                    details={"field": "store", "reason": "invalid"},
                )
            body = codec.decode(msg.data)
            if not isinstance(body, dict):
                raise InvalidRequestError(
                    "request body must be an object", details={"field": "body", "reason": "not an object"}
                )
            try:
                request = self.op.request.model_validate(body)
            except ValidationError as exc:
                raise InvalidRequestError("invalid request", details=validation_details(exc)) from None
            if self.authz is not None:  # the op's (resource, action) from shared/authz.TABLE
                self.authz.enforce(self.span_name, store, request, msg.headers, internal=self.op.internal)
            result = await self.op.handler(request, self.spec.make_ctx(store))
            wire = result.to_wire() if isinstance(result, Response) else result.model_dump(mode="python")
            data = codec.encode(wire)
            try:
                await msg._client.publish(msg.reply, data, headers=_reply_headers(codec))
            except MaxPayloadError:
                raise PayloadTooLargeError(
                    "the reply is larger than the server's max_payload; ask for fewer items",
                    details={"size": len(data)},
                ) from None
        except GatewayError as exc:
            err = exc
        except Exception as exc:  # the one catch-all: never leak a traceback to callers
            log.exception("unhandled error in %s", self.span_name)
            details: dict[str, Any] = {}
            if span is not None:
                span.record_exception(exc)
                details["trace_id"] = format(span.get_span_context().trace_id, "032x")
            err = InternalError("internal error", details=details)
        if err is not None:
            try:
                await _send_error(msg, codec, err)
            except Exception:  # connection closing: nothing more we can do
                log.warning("could not send error reply for %s", self.span_name)
        if observed:
            took = {"duration": (time.perf_counter_ns() - started) // 1000, "system_time": system_time_ms()}
            if err is None:
                emit(REQUEST_STOP, took, {**self._meta(store), "result": "success"})
            else:
                emit(REQUEST_ERROR, took, {**self._meta(store), "code": err.code.value, "reason": err.code.value})
        return err

    def _meta(self, store: str) -> dict[str, Any]:
        return {"service": self.spec.name, "op": self.span_name, "store_id": store, "request_type": self.op.name}

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
            return
        if not reply_allowed(msg.reply, self.reply_prefixes):
            drop_reply(self.span_name, msg.reply, self.endpoint)
            return
        started = time.perf_counter_ns()
        store = self.subjects.store_of(msg.subject)
        t = tracer()
        if t is None:
            err = await self._serve(msg, store, None)
        else:
            with t.start_as_current_span(
                self.span_name,
                context=extract_context(msg.headers),
                kind=trace.SpanKind.SERVER,
                attributes={"messaging.system": "nats", "esdb.store": store, "esdb.op": self.span_name},
            ) as span:
                err = await self._serve(msg, store, span)
                if err is not None:
                    span.set_attribute("esdb.error.code", err.code.value)
        elapsed = time.perf_counter_ns() - started
        if metering():  # without an SDK meter provider the instruments would drop it anyway
            inst = instruments()
            attrs = {"op": self.span_name}
            inst.duration.record(elapsed / 1e6, attrs)
            inst.requests.add(1, attrs)
            if err is not None:
                inst.errors.add(1, {**attrs, "code": err.code.value})
        _record(self.endpoint, elapsed, err)


# where an endpoint's schemas are, relative to the repository root (tools/gen_schemas.py writes
# them; docs/api/asyncapi.json ties them to the subjects); shown in $SRV.INFO endpoint metadata
SCHEMA_DIR: Final = "docs/api/schemas"


def schema_metadata(token: str, op: str) -> dict[str, str]:
    """The ``$SRV.INFO`` metadata that points at an endpoint's request, reply and error schemas."""
    return {
        "request_schema": f"{SCHEMA_DIR}/{token}.{op}.request.json",
        "response_schema": f"{SCHEMA_DIR}/{token}.{op}.reply.json",
        "error_schema": f"{SCHEMA_DIR}/error.json",
    }


def _guard_discovery(svc: Service, prefixes: Sequence[str]) -> None:
    """nats.micro answers ``$SRV.PING/INFO/STATS`` itself; hold those replies to the same rule
    as ours (a ``$SRV.INFO`` with a log subject as reply would write the service's description
    into the log). Wraps the callbacks of its verb subscriptions (read per message by nats-py)."""
    for key, sub in getattr(svc, "_subscriptions", {}).items():
        inner = sub._cb
        if inner is None:
            continue

        async def guarded(msg: Msg, inner: Callable[[Msg], Awaitable[None]] = inner, key: str = key) -> None:
            if msg.reply and not reply_allowed(msg.reply, prefixes):
                drop_reply(f"$SRV.{key}", msg.reply)
                return
            await inner(msg)

        sub._cb = guarded


async def start_service(
    nc: Client,
    spec: ServiceSpec[CtxT],
    subjects: Subjects,
    max_in_flight: int = 512,
    *,
    reply_prefixes: Sequence[str] = DEFAULT_REPLY_PREFIXES,
    authz: Authz | None = None,
) -> RunningService:
    """Register ``spec`` with nats.micro and start answering its ops (only to reply subjects
    under ``reply_prefixes``). ``authz``: the capability policy (shared/security/authz.py); every op must
    have its rule in ``esdb_gater.shared.security.authz.TABLE``."""
    if authz is not None:
        missing = [f"{op.token or spec.token}.{op.name}" for op in spec.ops]
        missing = [k for k in missing if k not in authz.table]
        if missing:
            raise ValueError(f"{spec.name}: no rule in shared/authz.TABLE for {', '.join(missing)}")
    svc = await add_service(
        nc,
        name=spec.name,
        version=spec.version,
        description=spec.description,
        metadata={"esdb.service": spec.token, "esdb.prefix": subjects.prefix},
        queue_group=spec.name,
    )
    tasks: set[asyncio.Task[None]] = set()
    slots = _Slots(max_in_flight)
    reply_prefixes = (*reply_prefixes, own_inbox(nc))
    _guard_discovery(svc, reply_prefixes)
    for op in spec.ops:
        token = op.token or spec.token
        subject = subjects.api("_", token, op.name) if op.scope == "global" else subjects.api_endpoint(token, op.name)
        if op.internal:
            subject = subjects.internal_endpoint(token, op.name)
        dispatcher = _Dispatcher(spec, op, subjects, slots, tasks, reply_prefixes)
        dispatcher.authz = authz
        await svc.add_endpoint(
            name=("internal_" if op.internal else "") + (op.name if token == spec.token else f"{token}_{op.name}"),
            subject=subject,
            handler=dispatcher,
            metadata={"description": op.description or op.name, **schema_metadata(token, op.name)},
        )
        dispatcher.endpoint = svc._endpoints[-1]
        inline = getattr(nc, "inline", None)  # FastClient: requests start from the read loop
        sub = getattr(dispatcher.endpoint, "_subscription", None)
        if inline is not None and sub is not None:
            inline(sub, dispatcher.inline)
    return RunningService(svc, tasks)
