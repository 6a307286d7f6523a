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
from collections.abc import Awaitable, Callable
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

from shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec, codec_for
from shared.errors import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    GatewayError,
    InternalError,
    InvalidRequestError,
    PayloadTooLargeError,
    StoreNotFoundError,
)
from shared.models.common import Response
from shared.subjects import STORE_RE, Subjects
from shared.telemetry import extract_context, instruments, tracer

__all__ = ["Op", "RunningService", "ServiceSpec", "start_service", "validation_details"]

log = logging.getLogger(__name__)

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


async def _send_error(msg: Msg, codec: Codec, err: GatewayError) -> None:
    headers = {
        ERROR_HEADER: err.message.replace("\r", " ").replace("\n", " ")[:200],
        ERROR_CODE_HEADER: str(err.status),
    }
    if codec is MSGPACK:
        headers[CONTENT_TYPE_HEADER] = MSGPACK.content_type
    await msg._client.publish(msg.reply, codec.encode(err.to_envelope()), headers=headers)


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


class _Dispatcher(Generic[CtxT]):
    def __init__(
        self,
        spec: ServiceSpec[CtxT],
        op: Op[CtxT],
        subjects: Subjects,
        sem: asyncio.Semaphore,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.spec = spec
        self.op = op
        self.subjects = subjects
        self.sem = sem
        self.tasks = tasks
        self.endpoint: Endpoint | None = None
        self.span_name: Final = f"{op.token or spec.token}.{op.name}"

    async def __call__(self, req: MicroRequest) -> None:
        await self.sem.acquire()
        task = asyncio.create_task(self._handle(req._msg))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.sem.release()

    async def _serve(self, msg: Msg, store: str, span: trace.Span | None) -> GatewayError | None:
        """Decode, validate, call the handler, reply; returns the error that was answered."""
        codec: Codec = JSON
        err: GatewayError | None = None
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
        return err

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
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
        inst = instruments()
        attrs = {"op": self.span_name}
        inst.duration.record(elapsed / 1e6, attrs)
        inst.requests.add(1, attrs)
        if err is not None:
            inst.errors.add(1, {**attrs, "code": err.code.value})
        _record(self.endpoint, elapsed, err)


async def start_service(
    nc: Client, spec: ServiceSpec[CtxT], subjects: Subjects, max_in_flight: int = 512
) -> RunningService:
    """Register ``spec`` with nats.micro and start answering its ops."""
    svc = await add_service(
        nc,
        name=spec.name,
        version=spec.version,
        description=spec.description,
        metadata={"esdb.service": spec.token, "esdb.prefix": subjects.prefix},
        queue_group=spec.name,
    )
    tasks: set[asyncio.Task[None]] = set()
    sem = asyncio.Semaphore(max_in_flight)
    for op in spec.ops:
        token = op.token or spec.token
        subject = subjects.api("_", token, op.name) if op.scope == "global" else subjects.api_endpoint(token, op.name)
        dispatcher = _Dispatcher(spec, op, subjects, sem, tasks)
        await svc.add_endpoint(
            name=op.name if token == spec.token else f"{token}_{op.name}",
            subject=subject,
            handler=dispatcher,
            metadata={"description": op.description or op.name},
        )
        dispatcher.endpoint = svc._endpoints[-1]
    return RunningService(svc, tasks)
