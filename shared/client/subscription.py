"""The subscription service's ops (seed names; docs/api/subscription.md) and the deliveries a
subscriber receives (``Deliveries``, ``Delivery``; header names from ``core.subjects``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK
from esdb_gater.shared.core.subjects import H_BATCH_COUNT, H_DELIVERY_ATTEMPT, H_SUBSCRIPTION
from esdb_gater.shared.models.subscription import SubscriptionInfo

__all__ = ["Deliveries", "Delivery", "SubscriptionMethods"]


class SubscriptionMethods(Transport):
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
        ``max_in_flight``, ``ack_wait_ms``, ``max_deliver``, ``backoff_ms``, ``codec``,
        ``delivery`` (``"event"`` or ``"batch"``), ``batch_max``, ``ack`` (``"each"`` or ``"cumulative"``)."""
        body = {"type": type, "selector": selector, "name": name, "start_from": start_from, "subscriber": subscriber}
        reply = await self.request(store, "subscription", "save", {**body, **options})
        return SubscriptionInfo.model_validate(reply)

    async def remove_subscription(self, store: str, type: str, selector: Any, name: str) -> None:
        await self.request(store, "subscription", "remove", {"type": type, "selector": selector, "name": name})

    async def ack_event(
        self, store: str, stream_id: str, subscription_name: str, event_number: int, *, cumulative: bool | None = None
    ) -> None:
        """``cumulative=True``: also every event delivered before it; None: the subscription's ``ack`` mode."""
        body: dict[str, Any] = {
            "stream_id": stream_id,
            "subscription_name": subscription_name,
            "event_number": event_number,
        }
        if cumulative is not None:
            body["cumulative"] = cumulative
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


@dataclass
class Delivery:
    """One event delivered by a subscription; or, with ``delivery: "batch"``, one batch
    (``event`` is then ``{"events": [...]}``; ``events`` works for both)."""

    event: dict[str, Any]
    attempt: str
    subscription: str
    msg: Msg

    @property
    def is_batch(self) -> bool:
        return H_BATCH_COUNT in (self.msg.headers or {})

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events of a batch, or the one event."""
        return list(self.event["events"]) if self.is_batch else [self.event]

    @property
    def stream_id(self) -> str:
        return str(self.event["stream_id"])

    @property
    def version(self) -> int:
        return int(self.event["version"])

    async def ack(self) -> None:
        """Native ack: reply to the delivery (no extra request to the service); a batch's reply
        acks all its events."""
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
            attempt=headers.get(H_DELIVERY_ATTEMPT, "1"),
            subscription=headers.get(H_SUBSCRIPTION, ""),
            msg=msg,
        )
