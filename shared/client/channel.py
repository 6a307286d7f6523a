"""The channel service's ops (``esdb_channel_server``: publish / subscribe / unsubscribe;
docs/api/channel.md) and what a subscriber receives (``ChannelSubscription``, ``ChannelDelivery``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.core.codec import JSON
from esdb_gater.shared.core.connection import flush_barrier
from esdb_gater.shared.core.errors import GatewayError
from esdb_gater.shared.core.subjects import H_CHANNEL_SEQ
from esdb_gater.shared.models.channel import ChannelInfo, HistoryResponse, PublishResponse, SubscribeResponse
from esdb_gater.shared.security import signing

__all__ = ["ChannelDelivery", "ChannelMethods", "ChannelSubscription"]


class ChannelMethods(Transport):
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
            message = signing.sign(message, secret)
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
        await flush_barrier(self.nc)
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
        client: ChannelMethods,
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
        seq = (msg.headers or {}).get(H_CHANNEL_SEQ)
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
