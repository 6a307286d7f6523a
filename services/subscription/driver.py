"""Delivery: one driver per subscription, in whichever instance holds its lease.

A driver pulls commits from the subscription's durable consumer (at most ``max_in_flight``
unacknowledged at a time: a slow subscriber never grows our memory), filters their events,
and publishes each matching event to the subscriber subject as one NATS message whose reply
subject is the driver's native-ack subject. When every delivered event of a commit is acked,
the commit is acked in JetStream; unacked commits come back after ``ack_wait``/``backoff`` and
their unacked events are delivered again; on the delivery after ``max_deliver`` the remaining
events are parked in the dead-letter stream and the commit is acked.

The supervisor in every instance watches the definitions, takes free leases, renews its own,
and stops a driver whose lease it lost or whose subscription was removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from esdb_gater.services.subscription.store import (
    ControlAck,
    ControlAckReply,
    ControlReplayReply,
    Definition,
    SubscriptionStore,
)
from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec
from esdb_gater.shared.core.subjects import (
    H_DELIVERY_ATTEMPT,
    H_EVENT_VERSION,
    H_POSITION,
    H_STREAM_ID,
    H_SUBSCRIPTION,
    H_SUBSCRIPTION_KEY,
    Subjects,
    encode_token,
)
from esdb_gater.shared.core.telemetry import instruments
from esdb_gater.shared.log.eventlog import decode_commit
from esdb_gater.shared.log.jetstream import H_STATUS, StoredMsg
from esdb_gater.shared.log.lease import Lease, LeaseSupervisor
from esdb_gater.shared.runtime.endpoint import drop_reply, own_inbox, reply_allowed
from esdb_gater.shared.security.authz import control_allowed

__all__ = ["Driver", "Supervisor", "matcher", "pattern_regex"]

log = logging.getLogger(__name__)

_STORED_HEADERS = (
    "Nats-Stream",
    "Nats-Subject",
    "Nats-Sequence",
    "Nats-Time-Stamp",
    "Nats-Num-Pending",
    "Nats-Last-Sequence",
)

# (store, events) -> the events at their type's current schema version (esdb_gater.shared.upcasting.registry)
Upcaster = Callable[[str, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


def _contains(data: Any, pattern: Any) -> bool:
    """``data`` contains ``pattern`` as a subset (objects recursively, other values equal)."""
    if isinstance(pattern, dict):
        return isinstance(data, dict) and all(k in data and _contains(data[k], v) for k, v in pattern.items())
    return bool(data == pattern)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` = any run of characters (also none); every other character is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matcher(d: Definition) -> Callable[[dict[str, Any]], bool]:
    """The service-side part of a subscription's filter (the subject filter did the rest)."""
    sel = d.selector
    if d.type == "stream":
        if sel == "$all":
            return lambda ev: True
        skip = d.skip_below_version
        return lambda ev: bool(ev["version"] >= skip)
    if d.type == "event_type":
        return lambda ev: bool(ev["event_type"] == sel)
    if d.type == "event_pattern":
        compiled = pattern_regex(sel)
        return lambda ev: compiled.fullmatch(ev["stream_id"]) is not None
    if d.type == "event_payload":
        return lambda ev: _contains(ev["data"], sel)
    wanted = set(sel)
    return lambda ev: bool(ev["tags"]) and not wanted.isdisjoint(ev["tags"])


@dataclass
class _Pending:
    msg: Msg
    remaining: dict[int, dict[str, Any]] = field(default_factory=dict)  # version → event


class Driver:
    """Delivers one subscription while this instance holds its lease."""

    def __init__(
        self,
        nc: Client,
        store: SubscriptionStore,
        subjects: Subjects,
        d: Definition,
        upcast: Upcaster | None = None,
    ) -> None:
        self.nc = nc
        self.store = store
        self.subjects = subjects
        self.d = d
        self.upcast = upcast
        self.codec: Codec = MSGPACK if d.codec == "msgpack" else JSON
        self.match = matcher(d)
        # in every delivery's reply subject: the control subjects are under the store's API space,
        # so without it anyone allowed to call the store could ack (or -NAK) deliveries made to
        # someone else by guessing sequence numbers
        self.nonce = secrets.token_hex(8)
        self.pending: dict[int, _Pending] = {}  # commit seq → pending
        self.by_event: dict[tuple[str, int], int] = {}  # (stream_id, version) → commit seq
        self.replays: dict[int, asyncio.Future[bool]] = {}  # parked seq → acked?
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ctl_sub: Subscription | None = None
        self.delivered = 0
        self._background: set[asyncio.Task[None]] = set()
        self.reply_prefixes: tuple[str, ...] = ()

    async def start(self) -> None:
        security = self.store.settings.security
        self.reply_prefixes = (*security.reply_prefixes, own_inbox(self.nc))
        problem = self.subjects.target_problem(self.d.subscriber, security.target_allow.get(self.d.store))
        if problem is not None:
            # A definition saved before targets were checked (or before the allow-list changed):
            # deliver nothing, so nothing is pulled, parked or lost; remove and save it again.
            instruments().dropped.add(1, {"op": "subscription.deliver", "reason": "target_subject"})
            log.warning(
                "subscription %s/%s: subscriber %r is refused (%s); not delivering it",
                self.d.store,
                self.d.key,
                self.d.subscriber[:200],
                problem,
            )
            return
        self._ctl_sub = await self.nc.subscribe(
            self.subjects.subscription_control_all(self.d.store, self.d.key), cb=self._on_control
        )
        self._task = asyncio.create_task(self._run(), name=f"subscription-{self.d.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._ctl_sub is not None:
            with contextlib.suppress(Exception):
                await self._ctl_sub.unsubscribe()
            self._ctl_sub = None

    # --- pulling and delivering ---------------------------------------------------------------
    async def _run(self) -> None:
        """Pull requests of up to ``room`` messages, answered on our own inbox: messages are
        handled in the inbox callback as they arrive (nats-py's ``fetch`` spends a task per
        message); a status message (408 expired, 404 nothing) or a full batch ends a request."""
        inbox = self.nc.new_inbox()
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{self.subjects.log_stream(self.d.store)}.{self.d.consumer}"
        state = {"left": 0}
        done = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            hdrs = msg.headers
            if hdrs is not None and H_STATUS in hdrs and not msg.data:
                if hdrs[H_STATUS] in ("404", "408", "409"):  # nothing now / expired / consumer gone
                    done.set()
                return
            try:
                await self._handle(msg)
            except Exception:
                log.exception("subscription %s: could not deliver a commit", self.d.key)
            state["left"] -= 1
            if state["left"] <= 0:
                done.set()

        sub = await self.nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=50_000)
        try:
            while True:
                room = self.d.max_in_flight - len(self.pending)
                if room <= 0:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), 1.0)
                    continue
                batch = min(room, 256)
                state["left"] = batch
                done.clear()
                await self.nc.publish(
                    pull, json.dumps({"batch": batch, "expires": 1_000_000_000}).encode(), reply=inbox
                )
                try:
                    await asyncio.wait_for(done.wait(), 2.0)
                except TimeoutError:  # no answer at all (consumer or server gone): ask again calmly
                    await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        attempt = meta.num_delivered
        entry = self.pending.get(seq)
        if entry is None:
            sm = StoredMsg(
                subject=msg.subject,
                seq=seq,
                ts_ns=int(meta.timestamp.timestamp() * 1e9) if meta.timestamp else 0,
                headers=msg.headers or {},
                data=msg.data,
            )
            try:
                stream_id = self.subjects.stream_id_of(msg.subject)
            except ValueError:  # a message someone else published into the log: skip it
                await msg.ack()
                return
            rows = [ev for ev in decode_commit(sm, stream_id, "subscription") if self.match(ev)]
            if rows and self.upcast is not None:
                rows = await self.upcast(self.d.store, rows)
            if not rows:
                await msg.ack()
                return
            entry = _Pending(msg, {ev["version"]: ev for ev in rows})
            self.pending[seq] = entry
            for ev in rows:
                self.by_event[(stream_id, ev["version"])] = seq
        else:
            entry.msg = msg
        if attempt > self.d.max_deliver:
            await self._park(seq, entry, attempt - 1)
            return
        for ev in list(entry.remaining.values()):
            await self._deliver(ev, seq, attempt)

    def _headers(self, ev: dict[str, Any], attempt: int | str) -> dict[str, str]:
        h = {
            H_SUBSCRIPTION: encode_token(self.d.name),
            H_SUBSCRIPTION_KEY: self.d.key,
            H_STREAM_ID: encode_token(ev["stream_id"]),
            H_EVENT_VERSION: str(ev["version"]),
            H_POSITION: str(ev["position"]),
            H_DELIVERY_ATTEMPT: str(attempt),
        }
        if self.codec is MSGPACK:
            h[CONTENT_TYPE_HEADER] = MSGPACK.content_type
        return h

    async def _deliver(self, ev: dict[str, Any], seq: int, attempt: int) -> None:
        await self.nc.publish(
            self.d.subscriber,
            self.codec.encode(ev),
            reply=self.subjects.subscription_native_ack(self.d.store, self.d.key, self.nonce, seq, ev["version"]),
            headers=self._headers(ev, attempt),
        )
        self.delivered += 1

    async def _park(self, seq: int, entry: _Pending, attempts: int) -> None:
        for ev in entry.remaining.values():
            headers = self._headers(ev, attempts)
            await self.store.park(self.d, JSON.encode(ev), headers)
        await entry.msg.ack()
        self._forget(seq, entry)

    def _forget(self, seq: int, entry: _Pending) -> None:
        self.pending.pop(seq, None)
        for ev in entry.remaining.values():
            self.by_event.pop((ev["stream_id"], ev["version"]), None)
        self._room.set()

    async def ack(self, stream_id: str, version: int) -> bool:
        seq = self.by_event.pop((stream_id, version), None)
        if seq is None:
            return False
        entry = self.pending.get(seq)
        if entry is None:
            return False
        entry.remaining.pop(version, None)
        if not entry.remaining:
            self.pending.pop(seq, None)
            await entry.msg.ack()
            self._room.set()
        return True

    async def nak(self, stream_id: str, version: int) -> None:
        seq = self.by_event.get((stream_id, version))
        entry = self.pending.get(seq) if seq is not None else None
        if entry is not None:
            await entry.msg.nak()

    # --- control subjects -----------------------------------------------------------------------
    async def _on_control(self, msg: Msg) -> None:
        ctl = self.subjects.parse_subscription_control(self.d.store, self.d.key, msg.subject)
        if msg.reply and not reply_allowed(msg.reply, self.reply_prefixes):
            drop_reply("subscription.ctl", msg.reply)  # never answer into someone else's subject
            return
        if msg.headers and H_STATUS in msg.headers:
            # The server's "503 no responders" for a delivery nobody was subscribed to: not an
            # ack. The event stays pending and comes back after ack_wait (then parks).
            return
        try:
            if ctl is None:
                return
            if ctl.kind == "native_ack":  # native ack/nak of a delivery
                if not hmac.compare_digest(ctl.nonce, self.nonce):
                    return  # not a reply to one of this driver's deliveries
                entry = self.pending.get(ctl.seq)
                if entry is None:
                    return
                version = ctl.version
                ev = entry.remaining.get(version)
                if ev is None:
                    return
                if msg.data.strip().startswith(b"-NAK"):
                    await entry.msg.nak()
                else:
                    await self.ack(ev["stream_id"], version)
                if msg.reply:
                    await msg.respond(b"")
            elif ctl.kind == "parked_ack":  # native ack of a replayed parked event
                if not hmac.compare_digest(ctl.nonce, self.nonce):
                    return
                fut = self.replays.get(ctl.seq)
                if fut is not None and not fut.done():
                    fut.set_result(not msg.data.strip().startswith(b"-NAK"))
                if msg.reply:
                    await msg.respond(b"")
            elif not control_allowed(self.nc, msg.headers):  # ack or replay
                # the handlers' forwarded ack_event / replay_parked carry the services' credential;
                # a client publishing here directly would bypass the op's capability check
                # debug, not warning: any client allowed on the store could flood the log with these
                log.debug("subscription %s: refused a control message without the service credential", self.d.key)
            elif ctl.kind == "ack":
                req = ControlAck.model_validate_json(msg.data)
                found = await self.ack(req.stream_id, req.event_number)
                await msg.respond(JSON.encode(ControlAckReply(acked=found).model_dump()))
            else:  # replay
                # in a task: the acks of the replayed events arrive on this same subscription,
                # whose callback runs one message at a time
                task = asyncio.create_task(self._replay_and_answer(msg))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        except Exception:
            log.exception("subscription %s: bad control message on %s", self.d.key, msg.subject)

    async def _replay_and_answer(self, msg: Msg) -> None:
        try:
            n = await self.replay_parked()
            await msg.respond(JSON.encode(ControlReplayReply(replayed=n).model_dump()))
        except Exception:
            log.exception("subscription %s: replay of parked events failed", self.d.key)

    async def replay_parked(self) -> int:
        """Send every parked event again; those the subscriber acks leave the parked stream."""
        parked = await self.store.parked(self.d)
        waits: list[tuple[int, asyncio.Future[bool]]] = []
        loop = asyncio.get_running_loop()
        for sm in parked:
            fut: asyncio.Future[bool] = loop.create_future()
            self.replays[sm.seq] = fut
            headers = {k: v for k, v in sm.headers.items() if k not in _STORED_HEADERS}
            headers[H_DELIVERY_ATTEMPT] = "replay"
            ev = json.loads(sm.data)
            reply = self.subjects.subscription_parked_ack(self.d.store, self.d.key, self.nonce, sm.seq)
            await self.nc.publish(self.d.subscriber, self.codec.encode(ev), reply=reply, headers=headers)
            waits.append((sm.seq, fut))
        deadline = loop.time() + self.d.ack_wait_ms / 1000
        for seq, fut in waits:
            try:
                ok = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError:
                ok = False
            finally:
                self.replays.pop(seq, None)
            if ok:
                await self.store.unpark(self.d, seq)
        return len(waits)


class Supervisor(LeaseSupervisor[Definition, Driver]):
    """Runs in every instance: keeps a driver going for each subscription whose lease it holds."""

    name = "subscription-supervisor"

    def __init__(
        self,
        nc: Client,
        store: SubscriptionStore,
        subjects: Subjects,
        owner: str,
        lease_ttl_s: float = 5.0,
        upcast: Upcaster | None = None,
    ) -> None:
        super().__init__(store.kv, owner, lease_ttl_s)
        self.nc = nc
        self.store = store
        self.subjects = subjects
        self.upcast = upcast

    @property
    def defs(self) -> dict[tuple[str, str], Definition]:
        """The definitions as of the last reconcile (acks look names up here)."""
        return self.items

    @property
    def drivers(self) -> dict[tuple[str, str], tuple[Driver, Lease]]:
        return self.workers

    async def wanted(self) -> dict[tuple[str, str], Definition]:
        return {(d.store, d.key): d for d in await self.store.definitions()}

    def lease_key(self, key: tuple[str, str]) -> str:
        return self.store.lease_key(*key)

    def make_worker(self, item: Definition) -> Driver:
        return Driver(self.nc, self.store, self.subjects, item, self.upcast)
