"""Requests from one service to another over the public API (``<prefix>.api.<store>.<service>.<op>``).

A service that needs another service's data asks it, as any client would, instead of reading
the other service's storage: the link service appends through the stream service, the scavenger
asks the snapshot service for snapshots. Bodies travel as msgpack (bytes stay bytes), the
caller's trace continues, the services' credential goes along (``Authorization: Bearer``,
shared/authz.py), and an error reply is raised as the same ``GatewayError`` the other
service raised.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.authz import service_headers
from shared.codec import CONTENT_TYPE_HEADER, MSGPACK, codec_for
from shared.errors import (
    ERROR_CODE_HEADER,
    GatewayTimeoutError,
    PayloadTooLargeError,
    UnavailableError,
    error_from_envelope,
)
from shared.subjects import Subjects
from shared.telemetry import inject_context

__all__ = ["Peers"]


class Peers:
    """Calls to the other services, over one NATS connection."""

    def __init__(self, nc: Client, subjects: Subjects, timeout: float = 5.0) -> None:
        self.nc = nc
        self.subjects = subjects
        self.timeout = timeout

    async def call(
        self,
        store: str,
        service: str,
        op: str,
        body: dict[str, Any],
        *,
        wait: float | None = None,
        internal: bool = False,
    ) -> Any:
        """The decoded reply; raises the reply's error, ``unavailable`` when no instance of the
        service answers, ``timeout`` when none answers in time. ``internal``: on the
        services-only subject ``<prefix>.internal.<store>.<service>.<op>`` (ADR 0016)."""
        subject = (self.subjects.internal if internal else self.subjects.api)(store, service, op)
        # the services' own credential (shared/authz.py): checked like any token, and it marks
        # the call as one from the services (authz.is_service_call)
        headers = inject_context({CONTENT_TYPE_HEADER: MSGPACK.content_type, **service_headers(self.nc)})
        try:
            msg = await self.nc.request(subject, MSGPACK.encode(body), timeout=wait or self.timeout, headers=headers)
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
        reply = codec_for(hdrs).decode(msg.data) if msg.data else None
        if ERROR_CODE_HEADER in hdrs:
            raise error_from_envelope(reply)
        return reply
