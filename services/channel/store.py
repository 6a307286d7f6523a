"""The channel service's JetStream state (docs/adr/0007-channels.md). The only module of the
service that talks to JetStream.

* ``<prefix>-chlog`` (file): the durable channels' messages on ``<prefix>.chlog.<channel>.<topic>``,
  kept ``history_max_age_s``; ``channel.history`` reads it with batched Direct Gets.
* ``<prefix>-chrate`` (memory, counters): one counter per channel, second and topic on
  ``<prefix>.chrate.<channel>.<second>.<topic>``, incremented with ``Nats-Incr``; the PubAck's
  ``val`` is the count across every instance. Kept 5 s.
* ``<prefix>-chreplay`` (memory): one empty message per accepted HMAC signature with
  ``Nats-Msg-Id: <signature>``; the stream's duplicate window (the message TTL plus the clock
  skew) makes JetStream answer ``duplicate`` for a replay, atomically across instances. Only the
  newest message is kept, so memory is the server's de-duplication table: bounded by the
  accepted signed messages of one window.
* ``<prefix>-chsubs`` (KV): the subscribe-with-token forwardings, watched by every instance so
  whichever instance takes a publish forwards it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from esdb_gater.services.channel.policy import ChannelConfig
from esdb_gater.shared.core.codec import JSON
from esdb_gater.shared.core.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnavailableError,
)
from esdb_gater.shared.core.settings import ChannelsSettings
from esdb_gater.shared.core.subjects import H_CHANNEL_SEQ, Subjects
from esdb_gater.shared.core.telemetry import CHANNEL_BROADCAST, emit, instruments, system_time_ms
from esdb_gater.shared.core.telemetry import active as telemetry_active
from esdb_gater.shared.log.jetstream import ERR_STREAM_NAME_IN_USE, JetStreamApiError, Log
from esdb_gater.shared.log.quotas import check_quota
from esdb_gater.shared.models.channel import ChannelMessage

__all__ = ["ChannelStore", "Forward", "Prepared", "topic_matches"]

log = logging.getLogger(__name__)

SEQ_HEADER: Final = H_CHANNEL_SEQ  # the channel message's sequence header
_NS: Final = 1_000_000_000


def topic_matches(pattern: tuple[str, ...], tokens: list[str]) -> bool:
    """NATS subject matching of topic tokens (``*`` one token, ``>`` the rest)."""
    for i, p in enumerate(pattern):
        if p == ">":
            return len(tokens) > i
        if i >= len(tokens) or (p != "*" and p != tokens[i]):
            return False
    return len(tokens) == len(pattern)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready to deliver: its channel, topic and encoded body."""

    channel: ChannelConfig
    topic: str
    data: bytes


@dataclass(slots=True)
class _RateBatch:
    """Messages counted with one increment of a rate counter."""

    done: asyncio.Future[int]  # the counter's value after the increment
    n: int = 1

    def __post_init__(self) -> None:
        self.done.add_done_callback(_retrieved)


def _retrieved(fut: asyncio.Future[int]) -> None:
    """Mark an error as seen even when every message of its batch was cancelled meanwhile."""
    if not fut.cancelled():
        fut.exception()


@dataclass(frozen=True, slots=True)
class Forward:
    id: str
    channel: str
    topic: str
    deliver_to: str
    expires_at: float  # Unix seconds
    creator: str | None = None  # the holder DID of the token that subscribed (authz.holder_did)

    @property
    def pattern(self) -> tuple[str, ...]:
        return tuple(self.topic.split("."))

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "channel": self.channel,
                "topic": self.topic,
                "deliver_to": self.deliver_to,
                "expires_at": self.expires_at,
                **({"creator": self.creator} if self.creator else {}),
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Forward:
        d = json.loads(raw)
        creator = d.get("creator")
        return cls(
            str(d["id"]),
            str(d["channel"]),
            str(d["topic"]),
            str(d["deliver_to"]),
            float(d["expires_at"]),
            str(creator) if creator else None,
        )


class ChannelStore:
    def __init__(self, nc: Client, log_: Log, subjects: Subjects, settings: ChannelsSettings) -> None:
        self.forwardings_limit = 0  # quotas.forwardings_per_store, per channel (0 = none; ADR 0016)
        self.nc = nc
        self.js = nc.jetstream()
        self.log = log_
        self.subjects = subjects
        self.settings = settings
        self.kv: Any = None
        self._local: dict[tuple[str, str], list[int]] = {}
        self._rate_flight: dict[str, asyncio.Future[int]] = {}  # counter subject -> its increment in flight
        self._rate_open: dict[str, _RateBatch] = {}  # counter subject -> the batch waiting behind it
        self._rate_tasks: set[asyncio.Future[None]] = set()
        self._forwards: dict[str, dict[str, Forward]] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self._stopping = False
        self._synced = asyncio.Event()
        # security.target_allow["_"]: prefixes a deliver_to must also start with (ADR 0013)
        self.target_allow: list[str] | None = None
        self.clock: Callable[[], float] = time.time  # wall clock of the rate limits' seconds (tests pin it)

    # --- set-up -----------------------------------------------------------------------------
    async def _ensure_stream(self, config: dict[str, Any]) -> None:
        name = config["name"]
        try:
            await self.log.api(f"$JS.API.STREAM.CREATE.{name}", config)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise
            await self.log.api(f"$JS.API.STREAM.UPDATE.{name}", config)

    async def open(self, *, durable: bool, rate_limited: bool) -> None:
        s, cfg = self.subjects, self.settings
        replicas = cfg.state_replicas
        if durable:
            await self._ensure_stream(
                {
                    "name": s.channel_log_stream(),
                    "subjects": [s.channel_log_all()],
                    "storage": "file",
                    "retention": "limits",
                    "discard": "old",
                    "max_age": int(cfg.history_max_age_s * _NS),
                    "max_bytes": cfg.history_max_bytes,
                    "allow_direct": True,
                    "num_replicas": replicas,
                    "duplicate_window": min(int(cfg.history_max_age_s * _NS), 120 * _NS),
                    "description": "esdb-gater durable channel messages",
                }
            )
        if rate_limited and cfg.rate_limit_scope == "cluster":
            await self._ensure_stream(
                {
                    "name": s.channel_rate_stream(),
                    "subjects": [s.channel_rate_all()],
                    "storage": "memory",
                    "allow_msg_counter": True,
                    "max_msgs_per_subject": 1,
                    "max_age": 5 * _NS,
                    "duplicate_window": 1 * _NS,
                    "num_replicas": replicas,
                    "description": "esdb-gater channel rate-limit counters (per channel, second, topic)",
                }
            )
        window = (cfg.message_ttl_s + cfg.max_clock_skew_s + 1) * _NS
        await self._ensure_stream(
            {
                "name": s.channel_replay_stream(),
                "subjects": [s.channel_replay()],
                "storage": "memory",
                "max_msgs_per_subject": 1,
                "max_age": window,
                "duplicate_window": window,
                "num_replicas": replicas,
                "description": "esdb-gater HMAC signatures seen (replay protection, by Nats-Msg-Id)",
            }
        )
        bucket = s.channel_subs_bucket()
        try:
            self.kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            self.kv = await self.js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=float(cfg.subscribe_max_ttl_s + 60),
                    storage=StorageType.FILE,
                    replicas=replicas,
                    description="esdb-gater channel forwardings (subscribe with token)",
                )
            )
        self._watch_task = asyncio.create_task(self._watch(), name="channel-forwardings")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 5)

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None

    # --- rate limits ------------------------------------------------------------------------
    async def allow(self, channel: str, topic: str, limit: int) -> bool:
        """One more message on (channel, topic) this second, if under ``limit``: counted here
        first (a topic already over its limit costs no round trip), then on the shared counter
        (concurrent messages on one counter share a round trip: ``_shared_count``)."""
        sec = int(self.clock())
        key = (channel, topic)
        window = self._local.get(key)
        if window is None or window[0] != sec:
            if len(self._local) > 10_000:
                self._local = {k: w for k, w in self._local.items() if w[0] == sec}
            window = [sec, 0]
            self._local[key] = window
        if window[1] >= limit:
            return False
        window[1] += 1
        if self.settings.rate_limit_scope == "instance":
            return True
        return await self._shared_count(self.subjects.channel_rate(channel, sec, topic)) <= limit

    async def _incr(self, subject: str, n: int) -> int:
        ack = await self.log.publish_ack(subject, b"", {"Nats-Incr": f"+{n}"})
        return int(ack.get("val", "0"))

    async def _shared_count(self, subject: str) -> int:
        """This message's place in the counter ``subject`` (across every instance). Alone, one
        ``+1``. While an increment of that counter is in flight, the messages that arrive join one
        batch, sent as one ``+n`` when it is answered: the counter's new value V gives them the
        places V-n+1 .. V, the same places n separate ``+1`` would have given (ADR 0007)."""
        batch = self._rate_open.get(subject)
        if batch is not None:  # join the batch waiting behind the increment in flight
            batch.n += 1
            place = batch.n
            value = await asyncio.shield(batch.done)
            return value - batch.n + place
        ahead = self._rate_flight.get(subject)
        if ahead is None:  # nothing in flight: go alone, at once
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._rate_flight[subject] = done
            try:
                return await self._incr(subject, 1)
            finally:
                done.set_result(0)  # only "answered" matters to a batch behind
                if self._rate_flight.get(subject) is done:
                    del self._rate_flight[subject]
        batch = _RateBatch(asyncio.get_running_loop().create_future())
        self._rate_open[subject] = batch
        # its own task: whoever is cancelled, the batch is still sent and answered
        task = asyncio.ensure_future(self._send_batch(subject, batch, ahead))
        self._rate_tasks.add(task)
        task.add_done_callback(self._rate_tasks.discard)
        value = await asyncio.shield(batch.done)
        return value - batch.n + 1

    async def _send_batch(self, subject: str, batch: _RateBatch, ahead: asyncio.Future[int]) -> None:
        await asyncio.wait((ahead,))
        if self._rate_open.get(subject) is batch:
            del self._rate_open[subject]  # closed: later messages start the next batch
        self._rate_flight[subject] = batch.done
        try:
            batch.done.set_result(await self._incr(subject, batch.n))
        except Exception as exc:  # every message of the batch gets the error, as each would have
            batch.done.set_exception(exc)
        except asyncio.CancelledError:  # shutting down: its messages are cancelled too
            batch.done.cancel()
            raise
        finally:
            if self._rate_flight.get(subject) is batch.done:
                del self._rate_flight[subject]

    # --- replay guard (esdb_gater.shared.security.signing.ReplayGuard) --------------------------------------------
    async def first_seen(self, signature: str, expires_at: float) -> bool:
        ack = await self.log.publish(self.subjects.channel_replay(), b"", {"Nats-Msg-Id": signature})
        return not ack.duplicate

    # --- delivery ---------------------------------------------------------------------------
    def prepare(self, channel: ChannelConfig, topic: str, message: Any) -> Prepared:
        data = JSON.encode({"channel": channel.name, "topic": topic, "message": message})
        if len(data) > self.settings.max_message_bytes:
            raise PayloadTooLargeError(
                f"the message is larger than {self.settings.max_message_bytes} bytes",
                details={"size": len(data), "max": self.settings.max_message_bytes},
            )
        return Prepared(channel, topic, data)

    async def deliver(self, p: Prepared) -> int | None:
        """Store (durable channels), publish on the delivery subject, forward to token holders."""
        seq: int | None = None
        headers: dict[str, str] | None = None
        if p.channel.durable:
            ack = await self.log.publish(self.subjects.channel_log(p.channel.name, p.topic), p.data, {})
            seq = ack.seq
            headers = {SEQ_HEADER: str(seq)}
        await self.nc.publish(self.subjects.channel(p.channel.name, p.topic), p.data, headers=headers)
        forwarded = 0
        forwards = self._forwards.get(p.channel.name)
        if forwards:
            now = time.time()
            tokens = p.topic.split(".")
            for f in list(forwards.values()):
                if f.expires_at < now:
                    forwards.pop(f.id, None)
                elif topic_matches(f.pattern, tokens):
                    await self.nc.publish(f.deliver_to, p.data, headers=headers)
                    forwarded += 1
        if telemetry_active():
            # recipient_count: the forwardings this instance sent the message to; plain subscribers
            # of the delivery subject are not counted (a NATS publish does not say who got it)
            took = {"recipient_count": forwarded, "system_time": system_time_ms()}
            meta = {"channel": p.channel.name, "topic": p.topic, "priority": p.channel.priority, "seq": seq}
            emit(CHANNEL_BROADCAST, took, meta)
        return seq

    # --- history ----------------------------------------------------------------------------
    async def history(
        self, channel: str, topic: str, after_seq: int, limit: int
    ) -> tuple[list[ChannelMessage], int, bool]:
        msgs, pending = await self.log.direct_batch(
            self.subjects.channel_log_stream(),
            {"seq": after_seq + 1, "next_by_subj": self.subjects.channel_log(channel, topic), "batch": limit},
        )
        out = []
        for sm in msgs:
            try:
                body = JSON.decode(sm.data)
            except InvalidRequestError:
                body = None
            if not isinstance(body, dict):  # a message someone else published into the history
                log.warning("channel history: skipping the undecodable message at %d", sm.seq)
                continue
            out.append(
                ChannelMessage(
                    seq=sm.seq,
                    channel=str(body.get("channel", channel)),
                    topic=str(body.get("topic", "")),
                    message=body.get("message"),
                    published_at=sm.ts_ns // 1_000_000,
                )
            )
        last = out[-1].seq if out else after_seq
        return out, last, pending > 0

    # --- forwardings (subscribe with token) ----------------------------------------------------
    def forward_count(self) -> int:
        return sum(len(f) for f in self._forwards.values())

    async def add_forward(
        self, channel: str, topic: str, deliver_to: str, expires_at: float, creator: str | None = None
    ) -> Forward:
        if self.forward_count() >= self.settings.max_token_subscriptions:
            raise UnavailableError(
                "too many channel forwardings; unsubscribe some or wait for them to expire",
                details={"reason": "too_many_subscriptions", "max": self.settings.max_token_subscriptions},
            )
        if self.forwardings_limit > 0:
            # the mirror of the bucket (every instance's forwardings), not what this one made
            now = time.time()
            live = sum(1 for f in self._forwards.get(channel, {}).values() if f.expires_at >= now)
            try:
                check_quota("forwardings_per_store", self.forwardings_limit, live, "_")
            except QuotaExceededError as exc:
                exc.details["channel"] = channel
                raise
        f = Forward(secrets.token_hex(16), channel, topic, deliver_to, expires_at, creator)
        await self.kv.put(f.id, f.to_json())
        self._apply_put(f)  # visible here at once; other instances see it through the watch
        return f

    async def get_forward(self, id_: str) -> Forward | None:
        """The forwarding as stored (the bucket, not this instance's mirror), None when gone."""
        try:
            entry = await self.kv.get(id_)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return Forward.from_json(entry.value)
        except (ValueError, KeyError, TypeError):
            return None

    async def remove_forward(self, id_: str) -> None:
        self._apply_delete(id_)
        try:
            await self.kv.get(id_)
        except KeyNotFoundError:
            return  # unknown, expired or already removed: nothing to write
        await self.kv.delete(id_)

    def _apply_put(self, f: Forward) -> None:
        if f.expires_at >= time.time() and self._deliverable(f):
            self._forwards.setdefault(f.channel, {})[f.id] = f

    def _apply_delete(self, id_: str) -> None:
        for table in self._forwards.values():
            table.pop(id_, None)

    async def _watch(self) -> None:
        """Mirror the KV bucket into ``_forwards`` (restarting the watch after an error)."""
        while not self._stopping:
            try:
                self._watcher = await self.kv.watchall()
                self._forwards = {}
                async for entry in self._watcher:
                    if entry is None:  # the initial values are in
                        self._synced.set()
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self._apply_delete(entry.key)
                        continue
                    try:
                        self._apply_put(Forward.from_json(entry.value))
                    except (ValueError, KeyError, TypeError):
                        log.warning("ignoring a malformed channel forwarding %s", entry.key)
                if self._stopping:
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.warning("channel forwarding watch failed; restarting", exc_info=True)
                await asyncio.sleep(1)

    def check_deliver_to(self, deliver_to: str) -> None:
        """``invalid_request`` unless ``deliver_to`` is a literal subject outside the gateway's
        and the system's subject space (ADR 0013), under ``deliver_prefixes`` and, when set,
        ``security.target_allow["_"]``."""
        self.subjects.check_target(deliver_to, "deliver_to", self.target_allow)
        prefixes = self.settings.deliver_prefixes
        if not any(deliver_to.startswith(p) for p in prefixes):
            raise InvalidRequestError(
                f"deliver_to must start with one of {prefixes}",
                details={"field": "deliver_to", "reason": "not an allowed delivery subject"},
            )

    def _deliverable(self, f: Forward) -> bool:
        """A stored forwarding is used only if its target would be accepted today (one saved
        before the check, or by hand into the bucket, is ignored and logged)."""
        try:
            self.check_deliver_to(f.deliver_to)
        except InvalidRequestError as exc:
            instruments().dropped.add(1, {"op": "channel.forward", "reason": "target_subject"})
            log.warning("ignoring channel forwarding %s: %s", f.id, exc.message)
            return False
        return True
