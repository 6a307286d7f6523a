"""The transport every sub-client shares: the connection, the codec, request/reply with retry,
the bearer header, and error replies raised as the classes of ``esdb_gater.shared.core.errors``.

``Transport`` holds no service's ops: each service's methods are a mixin over it (``stream.py``,
``snapshot.py`` …), and ``GaterClient`` (``gater.py``) is all of them together.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Self, TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.shared.client.retry import RetryConfig, default_config, with_retry
from esdb_gater.shared.core import connection
from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec
from esdb_gater.shared.core.errors import (
    ERROR_CODE_HEADER,
    GatewayTimeoutError,
    InvalidRequestError,
    UnavailableError,
    error_from_envelope,
)
from esdb_gater.shared.core.subjects import STORE_RE, Subjects
from esdb_gater.shared.core.telemetry import client_span, inject_context, watch_connection
from esdb_gater.shared.models.stream import RecordedEvent, is_json_content_type
from esdb_gater.shared.security.authz import bearer_headers

__all__ = ["Transport", "decode_events"]

T = TypeVar("T")
_DEFAULT_RETRY = RetryConfig()  # a marker: "the retry settings" (esdb_gater.shared.client.retry.default_config)


class Transport:
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
    async def connect(cls, url: str = "nats://127.0.0.1:4222", **kwargs: Any) -> Self:
        nc = await connection.connect(url)
        watch_connection(nc, "client")  # cluster.node.up/down (docs/telemetry.md)
        client = cls(nc, **kwargs)
        client._owns_connection = True
        return client

    def with_token(self, token: str | None) -> Self:
        """A client on the same connection that sends ``token`` instead (None: no token)."""
        other = copy.copy(self)
        other.token = token
        other._owns_connection = False
        return other

    async def close(self) -> None:
        if self._owns_connection and not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        if store != "_" and not STORE_RE.match(store):
            # checked before it reaches the bus: "a.b" or ">" would be another subject (or a
            # wildcard), answered by nobody and retried as `unavailable`
            raise InvalidRequestError(
                "store must be 1-64 of [A-Za-z0-9_-]", details={"field": "store", "reason": "invalid"}
            )
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


EventT = TypeVar("EventT", bound=RecordedEvent)


def decode_events(reply: dict[str, Any], model: type[EventT] = RecordedEvent) -> list[EventT]:  # type: ignore[assignment]
    """The ``events`` of a reply as ``model`` (binary data, base64 in JSON, as ``bytes``)."""
    out = []
    for ev in reply["events"]:
        data = ev.get("data")
        if isinstance(data, str) and not is_json_content_type(ev.get("data_content_type", "application/json")):
            ev["data"] = base64.b64decode(data)
        out.append(model.model_validate(ev))
    return out
