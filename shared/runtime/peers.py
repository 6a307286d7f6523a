"""Requests from one service to another: the one way a service calls another.

A service that needs another service's data asks it, as any client would, instead of reading
the other service's storage: the link service appends through the stream service, the scavenger
asks the snapshot service for snapshots. ``Peers.call`` takes an op of the catalogue
(``shared/models/peer_ops.py``: subject, request and reply models) and a request model, and
returns the reply model. Bodies travel as msgpack (bytes stay bytes), the caller's trace
continues (``traceparent``), the services' credential goes along (``Authorization: Bearer``,
shared/security/authz.py), and an error reply is raised as the same ``GatewayError`` the other
service raised.

``Peers.ask`` is the same for a subject of one instance of a service (a subscription's control
subject, where another instance delivers it), with its own models.
"""

from __future__ import annotations

from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, MSGPACK, Codec, codec_for
from esdb_gater.shared.core.errors import (
    ERROR_CODE_HEADER,
    GatewayTimeoutError,
    InternalError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnavailableError,
    error_from_envelope,
)
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.core.telemetry import inject_context
from esdb_gater.shared.models.peer_ops import PeerOp
from esdb_gater.shared.runtime.endpoint import validation_details
from esdb_gater.shared.security.authz import service_headers

__all__ = ["Peers", "make_request"]

ReqT = TypeVar("ReqT", bound=BaseModel)
RepT = TypeVar("RepT", bound=BaseModel)


def make_request(model: type[ReqT], /, **fields: Any) -> ReqT:
    """``model(**fields)`` for a request built from stored data; a value the other service would
    refuse raises the ``invalid_request`` it would answer (same message and details)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise InvalidRequestError("invalid request", details=validation_details(exc)) from None


class Peers:
    """Calls to the other services, over one NATS connection."""

    def __init__(self, nc: Client, subjects: Subjects, timeout: float = 5.0) -> None:
        self.nc = nc
        self.subjects = subjects
        self.timeout = timeout

    async def call(self, store: str, op: PeerOp[ReqT, RepT], request: ReqT, *, wait: float | None = None) -> RepT:
        """The reply of ``op`` on ``store``; raises the reply's error, ``unavailable`` when no
        instance of the service answers, ``timeout`` when none answers in ``wait`` seconds
        (default: the connection's request timeout)."""
        subject = (self.subjects.internal if op.internal else self.subjects.api)(store, op.token, op.name)
        return await self.ask(subject, request, op.reply, service=op.token, wait=wait)

    async def ask(
        self,
        subject: str,
        request: BaseModel,
        reply: type[RepT],
        *,
        service: str,
        wait: float | None = None,
        codec: Codec = MSGPACK,
    ) -> RepT:
        """``request`` to ``subject`` (any service subject), the answer as ``reply``. ``service``
        names the callee in errors; ``codec``: the body's encoding (msgpack is announced in
        ``Content-Type``, JSON is the default and goes without it)."""
        # the services' own credential (shared/security/authz.py): checked like any token, and it marks
        # the call as one from the services (authz.is_service_call)
        headers = {CONTENT_TYPE_HEADER: codec.content_type} if codec is MSGPACK else {}
        headers = inject_context({**headers, **service_headers(self.nc)})
        body = codec.encode(request.model_dump(mode="python", exclude_unset=True))
        try:
            msg = await self.nc.request(subject, body, timeout=wait or self.timeout, headers=headers)
        except NoRespondersError:
            raise UnavailableError(
                f"the {service} service is not answering", details={"service": service, "subject": subject}
            ) from None
        except MaxPayloadError:
            raise PayloadTooLargeError(
                f"the request to the {service} service is larger than the server's max_payload",
                details={"service": service, "subject": subject},
            ) from None
        except NatsTimeoutError:
            raise GatewayTimeoutError(
                f"the {service} service did not answer in time", details={"service": service, "subject": subject}
            ) from None
        hdrs = msg.headers or {}
        answer = codec_for(hdrs).decode(msg.data) if msg.data else None
        if ERROR_CODE_HEADER in hdrs:
            raise error_from_envelope(answer)
        try:
            return reply.model_validate(answer)
        except ValidationError as exc:
            raise InternalError(
                f"unexpected reply from the {service} service",
                details={"service": service, "subject": subject, **validation_details(exc)},
            ) from None
