"""The library's recorders over the gateway's stream API (docs/eventsourcing.md).

* An aggregate is a stream: ``stream_id = str(originator_id)``; each stored event is one gateway
  event with ``event_type = topic``, ``data = state`` (bytes, ``application/octet-stream``) and
  ``metadata = {"originator_version": v}`` (plus ``"originator_id_type": "uuid"`` when the id is a
  ``UUID``, so the id's type round-trips).
* ``insert_events`` is one ``stream.append_multi``: one append per aggregate with an exact
  ``expected_version``, plus the tracking record as the append's ``checkpoint`` (process
  recorder). Either all of it is stored or nothing.
* Notification ids are the gateway's ``notification_id`` (``position * 16384 + index``): unique
  per event, increasing in log order, not contiguous. ``select_notifications``,
  ``max_notification_id`` and subscriptions use ``stream.read_all``.
* Tracking records are the store's named checkpoints (``stream.checkpoint``); a new one must be
  greater than the stored one.

Versions. A stream's versions are 0, 1, 2 … while ``originator_version`` may start anywhere and,
for snapshots, have gaps. The recorder keeps, per stream it has seen, the last stream version
and the last ``originator_version`` (both only grow), and appends with that stream version as
the expectation. A stream it has not seen is expected not to exist (``-1``). When the gateway
answers ``wrong_expected_version``, the recorder reads the stream's last events: if our events
are already there (a resend after a lost reply) the insert succeeded; if the stream's last
``originator_version`` is at or above our first one, the insert is a conflict (``IntegrityError``);
otherwise it retries with the stream's real last version. The check and the write stay one step
on the server (the exact expectation), so two writers can never both store a version.

Thread safety: every method may be called from any thread (not from the factory's loop thread).
The calls run as coroutines on the factory's one loop thread and share its connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from nats.errors import Error as NatsError

from esdb_gater.eventsourcing.bridge import Bridge, BridgeClosedError
from esdb_gater.shared.core.errors import (
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    PayloadTooLargeError,
    QuotaExceededError,
    RateLimitedError,
    RetriesExhaustedError,
    StoreNotFoundError,
    StreamNotFoundError,
    UnauthorizedError,
    UnavailableError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.errors import (
    InternalError as GatewayInternalError,
)
from esdb_gater.shared.core.ids import new_event_id

__all__ = [
    "MD_ID_TYPE",
    "MD_VERSION",
    "NOTIFICATION_ID_SHIFT",
    "GaterAggregateRecorder",
    "GaterApplicationRecorder",
    "GaterProcessRecorder",
    "GaterRecorder",
    "GaterSubscription",
    "GaterTrackingRecorder",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

OCTET_STREAM: Final = "application/octet-stream"
MD_VERSION: Final = "originator_version"
MD_ID_TYPE: Final = "originator_id_type"
NOTIFICATION_ID_SHIFT: Final = 14  # notification_id = position << 14 | index (docs/api/stream.md)
READ_PAGE: Final = 1000  # events per stream read (halved while a reply is too large)
READ_ALL_MAX: Final = 10_000  # read_all's largest limit
MAX_TOPICS: Final = 100  # read_all's largest event_types filter; more are filtered here
MAX_ATTEMPTS: Final = 10  # append_multi tries while expectations are corrected
VERSION_CACHE: Final = 100_000  # streams whose last versions are remembered (least recently used go)
NO_STREAM: Final = -1


def persistence_error(exc: BaseException) -> PersistenceError:
    """The library's exception for a gateway or connection error (PEP 249 names)."""
    if isinstance(exc, PersistenceError):
        return exc
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, WrongExpectedVersionError):
        return IntegrityError(msg)
    if isinstance(exc, InvalidRequestError | PayloadTooLargeError):
        return DataError(msg)
    if isinstance(
        exc,
        GatewayTimeoutError
        | UnavailableError
        | RateLimitedError
        | RetriesExhaustedError
        | QuotaExceededError
        | UnauthorizedError
        | NatsError
        | TimeoutError
        | ConnectionError,
    ):
        return OperationalError(msg)
    if isinstance(exc, GatewayInternalError):
        return InternalError(msg)
    if isinstance(exc, BridgeClosedError):
        return InterfaceError(msg)
    if isinstance(exc, GatewayError):
        return DatabaseError(msg)
    return InterfaceError(msg)


def _tracking_conflict(cp: dict[str, Any]) -> IntegrityError:
    """The error of a checkpoint (tracking record) that is not past the recorded one."""
    return IntegrityError(
        f"tracking {cp.get('name')!r} {cp.get('position')} is not greater than the recorded {cp.get('stored_position')}"
    )


def _originator_version(ev: dict[str, Any]) -> int:
    v = (ev.get("metadata") or {}).get(MD_VERSION)
    return v if isinstance(v, int) and not isinstance(v, bool) else int(ev["version"])


def _state(ev: dict[str, Any]) -> bytes:
    data = ev.get("data")
    if isinstance(data, bytes):
        return data
    if data is None:
        return b""
    # an event another client wrote as JSON: its data as compact JSON text
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _originator_id(ev: dict[str, Any]) -> UUID | str:
    sid: str = ev["stream_id"]
    if (ev.get("metadata") or {}).get(MD_ID_TYPE) == "uuid":
        try:
            return UUID(sid)
        except ValueError:
            return sid
    return sid


def to_stored_event(ev: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        originator_id=_originator_id(ev),
        originator_version=_originator_version(ev),
        topic=ev["event_type"],
        state=_state(ev),
    )


def to_notification(ev: dict[str, Any]) -> Notification:
    return Notification(
        id=int(ev["notification_id"]),
        originator_id=_originator_id(ev),
        originator_version=_originator_version(ev),
        topic=ev["event_type"],
        state=_state(ev),
    )


def to_gateway_event(se: StoredEvent) -> dict[str, Any]:
    metadata: dict[str, Any] = {MD_VERSION: se.originator_version}
    if isinstance(se.originator_id, UUID):
        metadata[MD_ID_TYPE] = "uuid"
    return {
        "event_id": new_event_id(),
        "event_type": se.topic,
        "data": bytes(se.state),
        "data_content_type": OCTET_STREAM,
        "metadata": metadata,
    }


@dataclass(slots=True)
class _Append:
    """One aggregate's part of an insert: its events in version order."""

    stream_id: str
    versions: list[int] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # positions in the caller's list
    events: list[dict[str, Any]] = field(default_factory=list)
    expected: int = NO_STREAM

    def body(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "expected_version": self.expected, "events": self.events}


# --- in-process wake-ups of subscriptions --------------------------------------------------------

_listeners_lock = threading.Lock()
_listeners: dict[tuple[str, str, str], set[threading.Event]] = {}


def _listen(key: tuple[str, str, str], event: threading.Event) -> None:
    with _listeners_lock:
        _listeners.setdefault(key, set()).add(event)


def _unlisten(key: tuple[str, str, str], event: threading.Event) -> None:
    with _listeners_lock:
        events = _listeners.get(key)
        if events is not None:
            events.discard(event)
            if not events:
                del _listeners[key]


def _notify(key: tuple[str, str, str]) -> None:
    with _listeners_lock:
        events = list(_listeners.get(key, ()))
    for event in events:
        event.set()


class GaterRecorder(Recorder):
    """What every recorder shares: the bridge, the store and the request helpers."""

    def __init__(self, bridge: Bridge, store: str, *, create_store: bool = True) -> None:
        self.bridge = bridge
        self.store = store
        self._key = (bridge.config.nats_url, bridge.config.subject_prefix, store)
        # stream id -> (last stream version, last originator_version); touched on the loop thread only
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        if create_store:
            self._call(self._create_store())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self.bridge.call(coro)
        except PersistenceError:
            raise
        except (GatewayError, NatsError, BridgeClosedError, TimeoutError, ConnectionError) as exc:
            raise persistence_error(exc) from exc

    async def _request(self, op: str, body: dict[str, Any]) -> Any:
        client = await self.bridge.client()
        return await client.request(self.store, "stream", op, body)

    async def _create_store(self) -> None:
        """``store.create`` (a no-op for an existing store). A deployment may refuse it to this
        client (capabilities, tenant accounts): the store is then expected to exist already."""
        client = await self.bridge.client()
        try:
            await client.request(self.store, "store", "create", {})
        except (UnauthorizedError, QuotaExceededError) as exc:
            log.info("store.create %s refused (%s); using the store as it is", self.store, exc.code)

    # --- the version cache -----------------------------------------------------------------------
    def _remember(self, stream_id: str, version: int, originator_version: int) -> None:
        old = self._last.get(stream_id)
        if old is not None and old[0] >= version:
            self._last.move_to_end(stream_id)
            return
        self._last[stream_id] = (version, originator_version)
        self._last.move_to_end(stream_id)
        if len(self._last) > VERSION_CACHE:
            self._last.popitem(last=False)

    # --- reads of one stream --------------------------------------------------------------------
    async def _read_stream(self, op: str, stream_id: str, start: int, count: int) -> tuple[list[dict[str, Any]], int]:
        """One page of ``forward``/``backward`` (raw: as stored) and the count asked for (halved
        while the reply would be too large); a missing stream or store is an empty page."""
        while True:
            body = {"stream_id": stream_id, "start_version": start, "count": count, "raw": True}
            try:
                reply = await self._request(op, body)
            except (StreamNotFoundError, StoreNotFoundError):
                return [], count
            except PayloadTooLargeError:
                if count == 1:
                    raise
                count = max(1, count // 2)
                continue
            return list(reply["events"]), count

    async def _select_events(
        self, originator_id: UUID | str, gt: int | None, lte: int | None, desc: bool, limit: int | None
    ) -> list[StoredEvent]:
        sid = str(originator_id)
        if limit is not None and limit <= 0:
            return []
        if not desc and gt is None:
            return await self._select_forward(sid, lte, limit)
        picked: list[dict[str, Any]] = []
        start = -1
        page = min(limit, READ_PAGE) if desc and limit is not None and lte is None else READ_PAGE
        while True:
            evs, asked = await self._read_stream("backward", sid, start, page)
            if start == -1 and evs:
                self._remember(sid, int(evs[0]["version"]), _originator_version(evs[0]))
            done = False
            for ev in evs:
                ov = _originator_version(ev)
                if gt is not None and ov <= gt:
                    done = True
                    break
                if lte is not None and ov > lte:
                    continue
                picked.append(ev)
                if desc and limit is not None and len(picked) >= limit:
                    done = True
                    break
            if done or len(evs) < asked or int(evs[-1]["version"]) <= 0:
                break
            start = int(evs[-1]["version"]) - 1
        if not desc:
            picked.reverse()
            if limit is not None:
                picked = picked[:limit]
        return [to_stored_event(ev) for ev in picked]

    async def _select_forward(self, sid: str, lte: int | None, limit: int | None) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        start = 0
        while True:
            want = READ_PAGE if limit is None else min(READ_PAGE, limit - len(out))
            evs, asked = await self._read_stream("forward", sid, start, want)
            for ev in evs:
                if lte is not None and _originator_version(ev) > lte:
                    return out
                out.append(to_stored_event(ev))
                if limit is not None and len(out) >= limit:
                    return out
            if len(evs) < asked:
                if evs:  # the stream's last event
                    self._remember(sid, int(evs[-1]["version"]), _originator_version(evs[-1]))
                return out
            start = int(evs[-1]["version"]) + 1

    # --- inserts --------------------------------------------------------------------------------
    def _plan(self, stored_events: Sequence[StoredEvent]) -> list[_Append]:
        """Group by aggregate, order each by version, refuse duplicates, set the expectations."""
        appends: dict[str, _Append] = {}
        for i, se in enumerate(stored_events):
            sid = str(se.originator_id)
            a = appends.get(sid)
            if a is None:
                a = appends[sid] = _Append(sid)
            a.versions.append(se.originator_version)
            a.indexes.append(i)
        for a in appends.values():
            order = sorted(range(len(a.versions)), key=a.versions.__getitem__)
            a.versions = [a.versions[k] for k in order]
            a.indexes = [a.indexes[k] for k in order]
            for prev, cur in zip(a.versions, a.versions[1:], strict=False):
                if cur == prev:
                    raise IntegrityError(f"originator {a.stream_id} version {cur} appears twice in one insert")
            a.events = [to_gateway_event(stored_events[k]) for k in a.indexes]
        return list(appends.values())

    def _expect(self, a: _Append) -> None:
        last = self._last.get(a.stream_id)
        if last is None:
            a.expected = NO_STREAM
            return
        if a.versions[0] <= last[1]:
            raise IntegrityError(
                f"originator {a.stream_id} already has version {last[1]}; cannot insert version {a.versions[0]}"
            )
        a.expected = last[0]

    async def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        if not stored_events and tracking is None:
            return []
        appends = self._plan(stored_events)
        for a in appends:
            self._expect(a)
        body: dict[str, Any] = {"appends": []}
        if tracking is not None:
            body["checkpoint"] = {"name": tracking.application_name, "position": tracking.notification_id}
        results: list[dict[str, Any]] | None = None
        for _ in range(MAX_ATTEMPTS):
            body["appends"] = [a.body() for a in appends]
            try:
                reply = await self._request("append_multi", body)
            except WrongExpectedVersionError as exc:
                results = await self._resolve(exc, appends)
                if results is None:
                    continue  # expectations corrected: try again
            else:
                results = list(reply["results"])
            break
        else:
            raise IntegrityError(f"insert still conflicts after {MAX_ATTEMPTS} attempts (concurrent writers)")
        ids = [0] * len(stored_events)
        for a, r in zip(appends, results, strict=True):
            first = int(r["first_notification_id"])
            for j, i in enumerate(a.indexes):
                ids[i] = first + j
            self._remember(a.stream_id, int(r["version"]), a.versions[-1])
        _notify(self._key)
        return ids

    async def _resolve(self, exc: WrongExpectedVersionError, appends: list[_Append]) -> list[dict[str, Any]] | None:
        """After ``wrong_expected_version``: raise IntegrityError for a real conflict; return the
        results when our own events are already stored (a resend after a lost reply); else
        correct the expectations and return None (try again)."""
        details = exc.details or {}
        conflicts = details.get("conflicts") or []
        if not conflicts:
            if "checkpoint" in details:
                raise _tracking_conflict(details["checkpoint"]) from exc
            raise IntegrityError(str(exc)) from exc
        by_stream = {a.stream_id: a for a in appends}
        conflicting = [by_stream[c["stream_id"]] for c in conflicts if c.get("stream_id") in by_stream]
        if len(conflicting) != len(conflicts):
            raise IntegrityError(str(exc)) from exc
        lasts = await asyncio.gather(
            *(self._read_stream("backward", a.stream_id, -1, len(a.events)) for a in conflicting)
        )
        ours = 0
        for a, (evs, _) in zip(conflicting, lasts, strict=True):
            if len(evs) == len(a.events) and [e["event_id"] for e in reversed(evs)] == [
                e["event_id"] for e in a.events
            ]:
                ours += 1
                continue
            if not evs:
                a.expected = NO_STREAM
                continue
            last_version, last_ov = int(evs[0]["version"]), _originator_version(evs[0])
            self._remember(a.stream_id, last_version, last_ov)
            if a.versions[0] <= last_ov:
                raise IntegrityError(
                    f"originator {a.stream_id} already has version {last_ov}; cannot insert version {a.versions[0]}"
                ) from exc
            a.expected = last_version
        if ours == 0:
            if "checkpoint" in details:
                raise _tracking_conflict(details["checkpoint"]) from exc
            return None
        if ours != len(appends):
            raise IntegrityError(str(exc)) from exc
        # every append is already stored, each as one commit of its own: rebuild the reply
        results: list[dict[str, Any]] = []
        for a, (evs, _) in zip(conflicting, lasts, strict=True):
            position = int(evs[-1]["position"])
            results.append(
                {
                    "stream_id": a.stream_id,
                    "version": int(evs[0]["version"]),
                    "position": position,
                    "first_notification_id": position << NOTIFICATION_ID_SHIFT,
                }
            )
        order = {a.stream_id: k for k, a in enumerate(appends)}
        results.sort(key=lambda r: order[r["stream_id"]])
        return results


class GaterAggregateRecorder(GaterRecorder, AggregateRecorder):
    """Events of aggregates (and, with purpose "snapshots", snapshots in their own store)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._call(self._insert(stored_events, None))
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        result: list[StoredEvent] = self._call(self._select_events(originator_id, gt, lte, desc, limit))
        return result


class GaterApplicationRecorder(GaterAggregateRecorder, ApplicationRecorder):
    """Aggregate events plus the store-wide notification log (``stream.read_all``)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids: list[int] = self._call(self._insert(stored_events, kwargs.get("tracking")))
        return ids

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        result: list[Notification] = self._call(
            self._select_notifications(start, limit, stop, topics, inclusive_of_start)
        )
        return result

    async def _select_notifications(
        self, start: int | None, limit: int, stop: int | None, topics: Sequence[str], inclusive: bool
    ) -> list[Notification]:
        if limit <= 0:
            return []
        wanted = set(topics)
        body: dict[str, Any] = {
            "from": start if start is not None and start > 0 else None,
            "inclusive": inclusive,
            "raw": True,
        }
        if stop is not None:
            body["to"] = stop
        if topics and len(wanted) <= MAX_TOPICS:
            body["event_types"] = sorted(wanted)
        out: list[Notification] = []
        page_cap = READ_ALL_MAX
        while len(out) < limit:
            body["limit"] = min(limit - len(out), page_cap)
            try:
                reply = await self._request("read_all", body)
            except (StoreNotFoundError, StreamNotFoundError):
                return out
            except PayloadTooLargeError:
                if body["limit"] == 1:
                    raise
                page_cap = max(1, body["limit"] // 2)
                continue
            for ev in reply["events"]:
                if wanted and ev["event_type"] not in wanted:
                    continue
                out.append(to_notification(ev))
            nxt = reply.get("next")
            if nxt is None:
                break
            body["from"], body["inclusive"] = nxt, False
        return out[:limit]

    def max_notification_id(self) -> int | None:
        result: int | None = self._call(self._max_notification_id())
        return result

    async def _max_notification_id(self) -> int | None:
        try:
            reply = await self._request("read_all", {"direction": "backward", "limit": 1, "raw": True})
        except (StoreNotFoundError, StreamNotFoundError):
            return None
        last = reply.get("last_notification_id")
        if last is None and reply["events"]:
            last = reply["events"][0]["notification_id"]
        return None if last is None else int(last)

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return GaterSubscription(self, gt=gt, topics=topics)


class GaterTrackingRecorder(GaterRecorder, TrackingRecorder):
    """Tracking records as the store's named checkpoints (strictly increasing per name)."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self._call(self._insert([], tracking))

    def max_tracking_id(self, application_name: str) -> int | None:
        result: int | None = self._call(self._max_tracking_id(application_name))
        return result

    async def _max_tracking_id(self, application_name: str) -> int | None:
        try:
            reply = await self._request("checkpoint", {"name": application_name})
        except (StoreNotFoundError, StreamNotFoundError):
            return None
        position = reply.get("position")
        return None if position is None else int(position)


class GaterProcessRecorder(GaterTrackingRecorder, GaterApplicationRecorder, ProcessRecorder):
    """New events and the tracking record of the upstream event, in one ``append_multi``."""


class GaterSubscription(ListenNotifySubscription[GaterApplicationRecorder]):
    """The library's pull-thread subscription, woken by this process's inserts into the store and
    by a poll of ``read_all``'s ``last_notification_id`` every ``ESDB_GATER_POLL_INTERVAL``."""

    def __init__(self, recorder: GaterApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        _listen(recorder._key, self._has_been_notified)
        self._watch: concurrent.futures.Future[None] | None = None
        if not self._has_been_stopped and not recorder.bridge.closed:
            self._watch = asyncio.run_coroutine_threadsafe(self._poll(), recorder.bridge.loop)

    async def _poll(self) -> None:
        recorder, seen = self._recorder, -1
        interval = recorder.bridge.config.poll_interval
        while not self._has_been_stopped:
            await asyncio.sleep(interval)
            try:
                last = await recorder._max_notification_id()
            except (GatewayError, NatsError) as exc:
                log.debug("subscription poll of %s failed: %s", recorder.store, exc)
                continue
            if last is not None and last != seen:
                seen = last
                self._has_been_notified.set()

    def stop(self) -> None:
        super().stop()
        _unlisten(self._recorder._key, self._has_been_notified)
        watch = self._watch
        if watch is not None:
            watch.cancel()
