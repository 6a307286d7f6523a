"""``stream.read_all``: every event of a store in log order, forward or backward, by pages.

Notification ids (docs/adr/0023-multi-stream-append-and-read-all.md): an event's id is
``position << 14 | index`` (its commit's log sequence, and its index in that commit), so ids grow
with the log, an append's events have consecutive ids and ``position = id >> 14``. Only the event
subjects (``<prefix>.log.<store>.e.*``) are read; checkpoints and other messages are never seen.

Cost of a page without filters: the commits it returns (at most ``limit``), fetched by batched
Direct Gets from the position (backward: windows of the log stepped down from the position,
doubling while they come back short), and one get of the newest event (``last_notification_id``
and the end of the read; backward also one of the oldest). With filters a page reads at most
``SCAN_BUDGET`` commits; it may then hold fewer than ``limit`` events, with ``next`` set.
On a replicated store any replica may answer a Direct Get: the newest part of each read is
checked against the stream leader, and read again while the replica catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from esdb_gater.services.stream.store import READ_PAGES, EventStore
from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.log.eventlog import H_COUNT, corrupt_entry, decode_commit, is_commit
from esdb_gater.shared.log.jetstream import StoredMsg, consistent_get
from esdb_gater.shared.models.stream import NOTIFICATION_SHIFT, ReadAllRequest

__all__ = ["NOTIFICATION_MASK", "SCAN_BUDGET", "AllPage", "AllReader", "notification_id"]

NOTIFICATION_MASK: Final = (1 << NOTIFICATION_SHIFT) - 1
SCAN_BUDGET: Final = 10_000  # commits a filtered page reads at most
MAX_WINDOW: Final = 8_192  # log sequences per backward window, at most
LAG_ROUNDS: Final = 50  # waits of 10 ms for a lagging replica


def notification_id(position: int, index: int) -> int:
    return (position << NOTIFICATION_SHIFT) | index


@dataclass(slots=True, frozen=True)
class AllPage:
    events: list[dict[str, Any]]
    next: int | None
    last_notification_id: int | None


@dataclass(slots=True, frozen=True)
class _Log:
    """What one read needs to know about the store's log."""

    name: str
    filter: str
    first: int  # where reading may start: the first event message (backward), or 1
    last: int  # the newest event message when the read began
    replicated: bool
    batch: int  # commits per Direct Get (memory level)
    max_bytes: int


class AllReader:
    def __init__(self, events: EventStore) -> None:
        self.events = events

    async def _bounds(self, store: str, *, backward: bool) -> tuple[_Log, int | None] | None:
        """The log's event range and the newest event's notification id: one get of the last
        message on the event subjects (the leader's, on a replicated store), plus, going
        backward, one of the first (a backward page must know where the log begins)."""
        ev = self.events
        info = await ev.existing(store)
        if info is None:
            return None
        name = ev.subjects.log_stream(store)
        events = ev.subjects.log_all(store)
        newest = await consistent_get(ev.log, name, {"last_by_subj": events}, info.config.replicas)
        if newest is None:
            return None
        first = 1  # forward: a batched Direct Get from 1 steps over removed messages itself
        if backward:
            oldest = await ev.log.direct_get(name, {"seq": 1, "next_by_subj": events})
            first = oldest.seq if oldest is not None else newest.seq
        batch, max_bytes = READ_PAGES[ev.memory.level() if ev.memory is not None else "normal"]
        lg = _Log(name, events, first, newest.seq, info.config.replicas > 1, batch, max_bytes)
        if is_commit(newest):
            return lg, notification_id(newest.seq, int(newest.headers[H_COUNT]) - 1)
        return lg, await self._last_id(lg)  # corrupt entries at the end: look further down

    async def read_all(self, store: str, req: ReadAllRequest) -> AllPage:
        bounds = await self._bounds(store, backward=req.direction != "forward")
        if bounds is None:
            return AllPage([], None, None)
        lg, last_id = bounds
        if last_id is None:
            return AllPage([], None, None)
        events, nxt = await self._page(store, lg, req)
        if req.direction == "forward" and nxt is not None and nxt >= last_id:
            nxt = None  # the page ends with the newest event
        return AllPage(events, nxt, last_id)

    # --- reading the log ------------------------------------------------------------------------
    async def _range(self, lg: _Log, lo: int, hi: int, n: int, *, tail: bool) -> list[StoredMsg]:
        """Up to ``n`` event-subject messages with lo <= seq <= hi, ascending (fewer when the
        batch's bytes run out). ``tail``: on a replicated store, confirm with the leader that
        nothing is missing at the end (a lagging replica may have answered), reading again if so."""
        log = self.events.log
        for _ in range(LAG_ROUNDS):
            batch, pending = await log.direct_batch(
                lg.name,
                {"seq": lo, "batch": max(1, min(n, lg.batch)), "next_by_subj": lg.filter, "max_bytes": lg.max_bytes},
            )
            out = [sm for sm in batch if sm.seq <= hi]
            if not tail or not lg.replicated or len(out) < len(batch) or pending > 0:
                return out  # not the newest part, or the replica has more after it: nothing missing
            after = (out[-1].seq if out else lo - 1) + 1
            if after > hi:
                return out
            sm = await log.leader_get(lg.name, {"seq": after, "next_by_subj": lg.filter})
            if sm is None or sm.seq > hi:
                return out
            await asyncio.sleep(0.01)  # the replica that answered is behind the leader
        raise UnavailableError("the store's replicas are behind; try again")

    async def _ascending(self, lg: _Log, lo: int, hi: int, want: int) -> AsyncIterator[StoredMsg]:
        """The event-subject messages in [lo, hi], ascending, fetched ``want`` at a time at first."""
        seq = lo
        n = want
        while seq <= hi:
            batch = await self._range(lg, seq, hi, n, tail=True)
            if not batch:
                return
            for sm in batch:
                yield sm
            seq = batch[-1].seq + 1
            n = lg.batch

    async def _descending(self, lg: _Log, hi: int, lo: int, window: int) -> AsyncIterator[StoredMsg]:
        """The event-subject messages in [lo, hi], descending: windows of the log read forward,
        stepped down from ``hi``, each twice the last (up to ``MAX_WINDOW``)."""
        first = True
        w = max(1, window)
        while hi >= lo:
            start = max(lo, hi - w + 1)
            msgs: list[StoredMsg] = []
            seq = start
            while seq <= hi:
                batch = await self._range(lg, seq, hi, hi - seq + 1, tail=first)
                if not batch:
                    break
                msgs.extend(batch)
                seq = batch[-1].seq + 1
            for sm in reversed(msgs):
                yield sm
            first = False
            hi = start - 1
            w = min(w * 2, MAX_WINDOW)

    async def _last_id(self, lg: _Log) -> int | None:
        """The newest event's notification id (None: the log holds no event)."""
        async for sm in self._descending(lg, lg.last, lg.first, 1):
            if is_commit(sm):
                return notification_id(sm.seq, int(sm.headers[H_COUNT]) - 1)
        return None

    def _events(self, store: str, sm: StoredMsg, prefix: str | None) -> list[dict[str, Any]]:
        """The commit's events with their notification ids (none when ``prefix`` rules it out)."""
        try:
            stream_id = self.events.subjects.stream_id_of(sm.subject)
        except ValueError:
            corrupt_entry(sm, "read_all", "not a stream subject")
            return []
        if prefix is not None and not stream_id.startswith(prefix):
            return []
        rows = decode_commit(sm, stream_id, "read_all")
        base = sm.seq << NOTIFICATION_SHIFT
        for i, row in enumerate(rows):
            row["notification_id"] = base | i
        return rows

    # --- a page, either direction -----------------------------------------------------------------
    async def _page(self, store: str, lg: _Log, req: ReadAllRequest) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``req.limit`` events in [lo_id, hi_id] in the request's direction, and the id to
        continue from (None: the range is done). With filters at most ``SCAN_BUDGET`` commits are
        read; ``next`` then points past the last one read."""
        forward = req.direction == "forward"
        types = set(req.event_types) if req.event_types else None
        filtered = types is not None or req.stream_prefix is not None
        step = 0 if req.inclusive else 1
        if forward:
            lo_id = 0 if req.from_ is None else req.from_ + step
            hi_id = req.to
        else:
            hi_id = None if req.from_ is None else req.from_ - step
            if hi_id is not None and hi_id < 0:
                return [], None
            lo_id = req.to if req.to is not None else 0
        lo = max(lg.first, lo_id >> NOTIFICATION_SHIFT)
        hi = lg.last if hi_id is None else min(lg.last, hi_id >> NOTIFICATION_SHIFT)
        want = lg.batch if filtered else req.limit + 1
        msgs = self._ascending(lg, lo, hi, want) if forward else self._descending(lg, hi, lo, want)
        out: list[dict[str, Any]] = []
        scanned = 0
        last_seen: int | None = None
        async for sm in msgs:
            scanned += 1
            rows = self._events(store, sm, req.stream_prefix)
            for row in rows if forward else reversed(rows):
                nid = row["notification_id"]
                above = hi_id is not None and nid > hi_id
                below = nid < lo_id
                if above if forward else below:  # past the end of the range
                    return out, None
                if below or above:  # not yet in it (the commit holding ``from``)
                    continue
                last_seen = nid
                if types is not None and row["event_type"] not in types:
                    continue
                out.append(row)
                if len(out) >= req.limit:
                    return out, nid
            if forward and sm.seq >= hi:
                break
            if filtered and scanned >= SCAN_BUDGET:
                if last_seen is None:
                    last_seen = notification_id(sm.seq, NOTIFICATION_MASK if forward else 0)
                return out, last_seen
        return out, None
