"""Delivery: one driver per subscription, in whichever instance holds its lease.

A driver pulls commits from the subscription's durable consumer (at most ``max_in_flight``
unacknowledged at a time: a slow subscriber never grows our memory), filters their events,
and publishes each matching event to the subscriber subject as one NATS message whose reply
subject is the driver's native-ack subject. When every delivered event of a commit is acked,
the commit is acked in JetStream; unacked commits come back after ``ack_wait``/``backoff`` and
their unacked events are delivered again; on the delivery after ``max_deliver`` the remaining
events are parked in the dead-letter stream and the commit is acked.

ADR 0024: with ``delivery: "batch"`` several events go out as one message (one reply acks them
all); with ``ack: "cumulative"`` an ack also covers every event delivered before it; both use a
consumer with ack policy "all", acked once for the highest finished prefix of commits.

The supervisor in every instance watches the definitions, takes free leases, renews its own,
and stops a driver whose lease it lost or whose subscription was removed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hmac
import itertools
import json
import logging
import re
import secrets
from collections import deque
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
    H_BATCH_COUNT,
    H_BATCH_FIRST_POSITION,
    H_BATCH_LAST_POSITION,
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

__all__ = ["Driver", "Supervisor", "js_meta", "matcher", "pattern_regex"]

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


def _log_order(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
    return item[0], item[1]["version"]


def _always() -> bool:
    return True


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


@dataclass(slots=True)
class _Pending:
    """A commit delivered and not yet finished (every event acked or parked)."""

    msg: Msg
    stream_id: str
    remaining: dict[int, dict[str, Any]] = field(default_factory=dict)  # version → event
    done: bool = False  # finished; with ack policy "all" it waits for the commits before it
    parked: bool = False


def js_meta(reply: str | None) -> tuple[int, int, int, int] | None:
    """(stream seq, deliveries, pending, timestamp ns) from a JetStream delivery's reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``, or the form with
    domain and account hash first); None for any other subject."""
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    t = reply.split(".")
    try:
        if len(t) == 9:
            return int(t[5]), int(t[4]), int(t[8]), int(t[7])
        if len(t) >= 11:
            return int(t[7]), int(t[6]), int(t[10]), int(t[9])
    except ValueError:
        return None
    return None


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
        self.match_all = d.type == "stream" and (d.selector == "$all" or d.skip_below_version <= 0)
        self.batched = d.delivery == "batch"
        # in every delivery's reply subject: the control subjects are under the store's API space,
        # so without it anyone allowed to call the store could ack (or -NAK) deliveries made to
        # someone else by guessing sequence numbers
        self.nonce = secrets.token_hex(8)
        self.ack_all = d.consumer_ack == "all"
        # with ack policy all, one JetStream ack covers every commit below it, also those another
        # holder delivered: acks stop while the lease is near its end (Supervisor.started)
        self.may_ack: Callable[[], bool] = _always
        self.pending: dict[int, _Pending] = {}  # commit seq → pending
        self.order: deque[int] = deque()  # the pending commits' seqs, ascending (may hold finished ones)
        self.undone = 0  # pending commits not finished: what max_in_flight bounds
        self.by_event: dict[tuple[str, int], int] = {}  # (stream_id, version) → commit seq
        self.replays: dict[int, asyncio.Future[bool]] = {}  # parked seq → acked?
        # batch delivery: events waiting for the next batch message, and the batches sent
        self.buf: list[tuple[int, dict[str, Any]]] = []  # (commit seq, event)
        self.buf_attempt = 1
        self.batches: dict[int, list[tuple[int, int]]] = {}  # batch number → (commit seq, version)
        self.batch_no = 0
        self.max_batches = 2 * d.max_in_flight + 16
        # ack policy "all" after a take-over: commits the previous holder left unacked sit at or
        # below this consumer stream seq; no JetStream ack until each came back to us (ADR 0024)
        self.hold: tuple[int, int] | None = None  # (delivered stream seq at start, unacked then)
        self.hold_seen: set[int] = set()
        self.hold_checked = 0.0
        self._stream_ids: dict[str, str] = {}  # log subject → stream id
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
    async def _take_over(self) -> None:
        """Ack policy "all": commits a previous holder left unacked must come back to us before
        any JetStream ack, or acking a later commit would ack them unseen."""
        if not self.ack_all:
            return
        info = await self.store.consumer_info(self.d) or {}
        left = int(info.get("num_ack_pending", 0))
        if left > 0:
            self.hold = (int(info.get("delivered", {}).get("stream_seq", 0)), left)

    async def _run(self) -> None:
        """Pull requests of up to ``room`` messages, each with its own reply subject (its status
        messages come there; its messages carry their log subject). Messages are handled as they
        arrive (nats-py's ``fetch`` spends a task per message); a status message (408 expired,
        404 nothing, 409) or a full batch ends a request. Two requests are open at a time, so
        JetStream sends the next batch while we handle one."""
        inbox = self.nc.new_inbox()
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{self.subjects.log_stream(self.d.store)}.{self.d.consumer}"
        loop = asyncio.get_running_loop()
        open_: dict[str, int] = {}  # request token → messages still to come
        state = {"busy": False, "seen": loop.time()}

        async def end(token: str) -> None:
            open_.pop(token, None)
            await self._flush_quietly()  # a batch never waits for commits that are not there
            self._room.set()

        async def on_msg(msg: Msg) -> None:
            state["seen"] = loop.time()
            hdrs = msg.headers
            if hdrs is not None and H_STATUS in hdrs and not msg.data:  # on the request's own subject
                status = hdrs[H_STATUS]
                if status in ("404", "408", "409"):  # nothing now / expired / consumer gone or full
                    state["busy"] = status == "409"
                    await end(msg.subject.rpartition(".")[2])
                return
            try:
                await self._handle(msg)
            except Exception:
                log.exception("subscription %s: could not deliver a commit", self.d.key)
            # messages carry the log subject; JetStream fills the open requests in order
            token = next(iter(open_), None)
            if token is not None:
                if open_[token] <= 1:
                    await end(token)
                else:
                    open_[token] -= 1

        attempt = 0
        while True:  # never deliver (and ack) without knowing what a previous holder left open
            try:
                await self._take_over()
                break
            except Exception:
                attempt += 1
                log.warning("subscription %s: consumer info failed (attempt %d)", self.d.key, attempt)
                await asyncio.sleep(min(2.0, 0.2 * attempt))
        inline = getattr(self.nc, "subscribe_inline", None)  # FastClient: no task switch per message
        consumer: asyncio.Task[None] | None = None
        if inline is not None:
            queue: list[Msg] = []
            wake = asyncio.Event()

            def on_inline(msg: Msg) -> None:
                queue.append(msg)
                wake.set()

            async def consume() -> None:
                nonlocal queue
                while True:
                    await wake.wait()
                    wake.clear()
                    msgs, queue = queue, []
                    for msg in msgs:
                        try:
                            await on_msg(msg)
                        except Exception:  # this task must outlive any one message
                            log.exception("subscription %s: could not handle a pulled message", self.d.key)

            sub = await inline(f"{inbox}.*", on_inline)
            consumer = asyncio.create_task(consume(), name=f"subscription-{self.d.key}-inbox")
        else:
            sub = await self.nc.subscribe(f"{inbox}.*", cb=on_msg, pending_msgs_limit=50_000)
        step = min(self.d.max_in_flight, 256)
        n = 0
        try:
            while True:
                if self.hold is not None:
                    await self._advance()
                room = self.d.max_in_flight - self.undone - sum(open_.values())
                if len(open_) < 2 and room >= max(1, step // 2) and not state["busy"]:
                    n += 1
                    batch = min(room, step)
                    open_[str(n)] = batch
                    await self.nc.publish(
                        pull, json.dumps({"batch": batch, "expires": 1_000_000_000}).encode(), reply=f"{inbox}.{n}"
                    )
                    continue
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 1.0)
                if state["busy"]:  # JetStream holds more unacked commits than we count (a take-over)
                    await asyncio.sleep(0.1)
                    state["busy"] = False
                if open_ and loop.time() - state["seen"] > 2.5:  # no answer at all: consumer or server gone
                    open_.clear()
                    await self._flush_quietly()
                    await asyncio.sleep(0.2)
        finally:
            if consumer is not None:
                consumer.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _stream_id(self, subject: str) -> str:
        """The stream id of a log subject (cached); ValueError for a foreign message."""
        sid = self._stream_ids.get(subject)
        if sid is None:
            sid = self.subjects.stream_id_of(subject)
            if len(self._stream_ids) >= 4096:
                self._stream_ids.clear()
            self._stream_ids[subject] = sid
        return sid

    async def _handle(self, msg: Msg) -> None:
        meta = js_meta(msg.reply)
        if meta is None:
            return  # not a JetStream delivery
        seq, attempt, left, ts_ns = meta
        if self.hold is not None and seq <= self.hold[0]:
            self.hold_seen.add(seq)
        entry = self.pending.get(seq)
        if entry is None:
            subject = msg.subject
            stream_id = self._stream_ids.get(subject)
            if stream_id is None:
                try:
                    stream_id = self._stream_id(subject)
                except ValueError:  # a message someone else published into the log: skip it
                    await self._finish(seq, self._new_entry(seq, msg, ""))
                    return
            rows = decode_commit(StoredMsg(subject, seq, ts_ns, msg.headers or {}, msg.data), stream_id, "subscription")
            if not self.match_all:
                rows = [ev for ev in rows if self.match(ev)]
            if rows and self.upcast is not None:
                rows = await self.upcast(self.d.store, rows)
            entry = self._new_entry(seq, msg, stream_id)
            if not rows:
                await self._finish(seq, entry)
                return
            remaining = entry.remaining = {ev["version"]: ev for ev in rows}
            by_event = self.by_event
            for version in remaining:
                by_event[(stream_id, version)] = seq
        else:
            entry.msg = msg
            if entry.done:  # finished, its ack held back (ack all): JetStream sent it again meanwhile
                return
        if attempt > self.d.max_deliver:
            await self._park(seq, entry, attempt - 1)
            return
        if self.batched:
            self.buf.extend([(seq, ev) for ev in entry.remaining.values()])
            if attempt > self.buf_attempt:
                self.buf_attempt = attempt
            if left == 0 or len(self.buf) >= self.d.batch_max:  # nothing more now, or a full batch
                await self._flush()
        else:
            for ev in list(entry.remaining.values()):
                await self._deliver(ev, seq, attempt)

    def _new_entry(self, seq: int, msg: Msg, stream_id: str) -> _Pending:
        entry = _Pending(msg, stream_id)
        self.pending[seq] = entry
        self.undone += 1
        order = self.order
        if not order or seq > order[-1]:
            order.append(seq)
        else:
            bisect.insort(order, seq)
        if len(order) > 2 * len(self.pending) + 64:  # explicit acks leave finished seqs behind
            self.order = deque(s for s in order if s in self.pending)
        return entry

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

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except Exception:
            log.exception("subscription %s: could not deliver a batch", self.d.key)

    async def _flush(self) -> None:
        """Send the buffered events as batch messages of at most ``batch_max`` events, in log order."""
        buf = self.buf
        if not buf:
            return
        self.buf = []
        attempt, self.buf_attempt = self.buf_attempt, 1
        buf.sort(key=_log_order)  # redelivered commits come back after later ones
        size = self.d.batch_max
        for i in range(0, len(buf), size):
            await self._send_batch(buf[i : i + size], attempt)

    async def _send_batch(self, part: list[tuple[int, dict[str, Any]]], attempt: int) -> None:
        body = self.codec.encode({"events": [ev for _, ev in part]})
        if len(body) + 1024 > self.nc.max_payload and len(part) > 1:  # too big for one message (headers too): halve it
            half = len(part) // 2
            await self._send_batch(part[:half], attempt)
            await self._send_batch(part[half:], attempt)
            return
        self.batch_no += 1
        self.batches[self.batch_no] = [(seq, ev["version"]) for seq, ev in part]
        while len(self.batches) > self.max_batches:  # unanswered batches: their events come back anyway
            del self.batches[next(iter(self.batches))]
        headers = {
            H_SUBSCRIPTION: encode_token(self.d.name),
            H_SUBSCRIPTION_KEY: self.d.key,
            H_BATCH_COUNT: str(len(part)),
            H_BATCH_FIRST_POSITION: str(part[0][0]),
            H_BATCH_LAST_POSITION: str(part[-1][0]),
            H_DELIVERY_ATTEMPT: str(attempt),
        }
        if self.codec is MSGPACK:
            headers[CONTENT_TYPE_HEADER] = MSGPACK.content_type
        reply = self.subjects.subscription_batch_ack(self.d.store, self.d.key, self.nonce, self.batch_no)
        await self.nc.publish(self.d.subscriber, body, reply=reply, headers=headers)
        self.delivered += len(part)
        # let the write go out now, not after the rest of the pulled messages are handled
        await asyncio.sleep(0)

    async def _park(self, seq: int, entry: _Pending, attempts: int) -> None:
        for ev in entry.remaining.values():
            headers = self._headers(ev, attempts)
            await self.store.park(self.d, JSON.encode(ev), headers)
        entry.parked = True
        await self._finish(seq, entry)

    # --- acks -----------------------------------------------------------------------------------
    async def _finish(self, seq: int, entry: _Pending, *, advance: bool = True) -> None:
        """Every event of the commit is acked or parked (or none matched): ack it in JetStream,
        or (ack policy "all") once every commit before it is finished too."""
        if entry.done:
            return
        for version in entry.remaining:
            self.by_event.pop((entry.stream_id, version), None)
        entry.remaining.clear()
        entry.done = True
        self.undone -= 1
        self._room.set()
        if not self.ack_all:
            self.pending.pop(seq, None)
            await entry.msg.ack()
        elif advance:
            await self._advance()

    async def _advance(self) -> None:
        """Ack policy "all": one JetStream ack for the highest commit below which every pending
        commit is finished."""
        if self.hold is not None and not await self._hold_released():
            return
        if not self.may_ack():  # our lease may be running out: ack nothing (the next holder gets
            return  # these commits again: delivered twice, never lost)
        order, pending = self.order, self.pending
        top: _Pending | None = None
        while order:
            entry = pending.get(order[0])
            if entry is not None and not entry.done:
                break
            seq = order.popleft()
            if entry is not None:
                del pending[seq]
                top = entry
        if top is not None:
            await top.msg.ack()

    async def _hold_released(self) -> bool:
        """After a take-over: every commit the previous holder left unacked came back to us, or
        JetStream holds no more unacked commits than we know of (at most one look a second)."""
        assert self.hold is not None
        seen_all = len(self.hold_seen) >= self.hold[1]
        if not seen_all:
            now = asyncio.get_running_loop().time()
            if now - self.hold_checked < 1.0:
                return False
            self.hold_checked = now
            info = await self.store.consumer_info(self.d) or {}
            # our parked commits may have left JetStream's count already: do not count them
            ours = sum(1 for e in self.pending.values() if not e.parked)
            seen_all = int(info.get("num_ack_pending", 0)) <= ours
        if seen_all:
            self.hold = None
            self.hold_seen.clear()
        return seen_all

    async def _ack_one(self, seq: int, version: int) -> bool:
        entry = self.pending.get(seq)
        if entry is None or entry.done or entry.remaining.pop(version, None) is None:
            return False
        self.by_event.pop((entry.stream_id, version), None)
        if not entry.remaining:
            await self._finish(seq, entry, advance=False)
        return True

    async def _ack_through(self, seq: int, version: int) -> bool:
        """Cumulative: every delivered event before commit ``seq``, and those of ``seq`` up to ``version``."""
        found = False
        for s in list(itertools.takewhile(lambda x: x <= seq, self.order)):
            entry = self.pending.get(s)
            if entry is None or entry.done:
                continue
            if s < seq:
                found = True
                await self._finish(s, entry, advance=False)
            else:
                for v in [v for v in entry.remaining if v <= version]:
                    found = await self._ack_one(s, v) or found
        return found

    async def ack(self, stream_id: str, version: int, cumulative: bool | None = None) -> bool:
        """An ack of one delivered event (and, cumulative, of every event delivered before it);
        False when that event is not outstanding."""
        seq = self.by_event.get((stream_id, version))
        if seq is None:
            return False
        return await self.ack_at(seq, version, cumulative)

    async def ack_at(self, seq: int, version: int, cumulative: bool | None = None) -> bool:
        """``ack`` by position: a cumulative one works even when that event itself was acked before."""
        if cumulative if cumulative is not None else self.d.ack == "cumulative":
            found = await self._ack_through(seq, version)
        else:
            found = await self._ack_one(seq, version)
        if self.ack_all:
            await self._advance()
        return found

    async def ack_batch(self, items: list[tuple[int, int]]) -> None:
        if self.d.ack == "cumulative":
            await self._ack_through(*items[-1])
        else:
            pending, by_event = self.pending, self.by_event
            for seq, version in items:  # _ack_one, inline: a batch holds up to 1000 events
                entry = pending.get(seq)
                if entry is None or entry.done or entry.remaining.pop(version, None) is None:
                    continue
                by_event.pop((entry.stream_id, version), None)
                if not entry.remaining:
                    await self._finish(seq, entry, advance=False)
        if self.ack_all:
            await self._advance()

    async def nak(self, stream_id: str, version: int) -> None:
        seq = self.by_event.get((stream_id, version))
        entry = self.pending.get(seq) if seq is not None else None
        if entry is not None and not entry.done:
            await entry.msg.nak()

    async def nak_batch(self, items: list[tuple[int, int]]) -> None:
        for seq in dict.fromkeys(seq for seq, _ in items):
            entry = self.pending.get(seq)
            if entry is not None and not entry.done:
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
                if msg.data.strip().startswith(b"-NAK"):
                    entry = self.pending.get(ctl.seq)
                    if entry is None or ctl.version not in entry.remaining:
                        return
                    await entry.msg.nak()
                else:
                    await self.ack_at(ctl.seq, ctl.version)
                if msg.reply:
                    await msg.respond(b"")
            elif ctl.kind == "batch_ack":  # native ack/nak of a batch delivery
                if not hmac.compare_digest(ctl.nonce, self.nonce):
                    return
                items = self.batches.pop(ctl.seq, None)
                if not items:
                    return
                if msg.data.strip().startswith(b"-NAK"):
                    await self.nak_batch(items)
                else:
                    await self.ack_batch(items)
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
                found = await self.ack(req.stream_id, req.event_number, req.cumulative)
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

    def started(self, worker: Driver, lease: Lease) -> None:
        # A quarter of the TTL before our lease runs out by our clock, stop acking JetStream: the
        # next holder takes it only after it ran out by its own clock (ADR 0024), so clocks may
        # differ by that much before two holders' ack-all acks could overlap.
        margin = self.lease_ttl_s / 4
        worker.may_ack = lambda: lease.valid(margin)
