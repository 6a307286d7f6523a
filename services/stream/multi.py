"""``stream.append_multi``: appends to several streams (and a checkpoint) stored all or none.

Storage (docs/adr/0023-multi-stream-append-and-read-all.md): one ADR-50 atomic batch on the
store's log stream. Each append is the commit message ``stream.append`` would write (the same
subject, body and headers, built by ``EventStore.prepare_commit``), with
``Nats-Expected-Last-Subject-Sequence`` = its stream's last commit; a checkpoint is one more
message on ``<prefix>.log.<store>.c.<token(name)>`` (msgpack ``{"p": position}``) expecting the
previous checkpoint message. JetStream checks every expectation at the commit, under the stream
lock, and stores the batch at consecutive sequences or not at all. A transaction of one message
(one append, no checkpoint) is a plain publish, as ``stream.append``.

Every reader of the log sees each commit of the batch exactly as a single append's commit; the
checkpoint messages are outside ``.e.``, which every event reader filters on.

Idempotency follows ``stream.append``: an append whose events all carry ids has the same
``Nats-Msg-Id``, goes into the event-id index under the same rule, and a resend is recognised the
same ways (index, or the stored append at the expected version). Appends found stored already are
not written again and answer as stored; when all are (and a checkpoint, if any, holds exactly the
position asked, right after them), the whole transaction is a resend and its stored result is the
reply. JetStream refuses a batch holding a message id it has seen in its duplicate window
(``ERR_BATCH_DUPLICATE_MSG_ID``, nothing stored): the appends it means are then looked up among
their streams' recent commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from esdb_gater.services.stream.store import AppendResult, EventStore, PreparedCommit, _matches, _rfc3339
from esdb_gater.shared.core.errors import InvalidRequestError, UnavailableError, WrongExpectedVersionError
from esdb_gater.shared.log.eventlog import H_VERSION, Commit, commit_of, corrupt_entry, event_ids, is_commit
from esdb_gater.shared.log.jetstream import (
    ERR_ATOMIC_DISABLED,
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_INFLIGHT_SAME_SUBJECT,
    ERR_WRONG_LAST_SEQUENCE,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    H_MSG_ID,
    JetStreamApiError,
    Log,
    StoredMsg,
    consistent_get,
    publish_batch,
)
from esdb_gater.shared.log.quotas import IdleMap
from esdb_gater.shared.models.stream import NO_STREAM, CheckpointIn, MultiAppend

__all__ = ["MultiAppender", "MultiResult", "appender", "decode_checkpoint"]

log = logging.getLogger(__name__)

RECENT_BATCH: Final = 256  # commits per Direct Get when a duplicate is looked for


@dataclass(slots=True, frozen=True)
class MultiResult:
    results: list[AppendResult]  # request order
    position: int  # the transaction's last message


@dataclass(slots=True)
class _Part:
    req: MultiAppend
    prepared: PreparedCommit
    head: Commit | None = None


_APPENDERS: weakref.WeakKeyDictionary[EventStore, MultiAppender] = weakref.WeakKeyDictionary()


def appender(events: EventStore) -> MultiAppender:
    """The ``MultiAppender`` of ``events`` (made on first use)."""
    a = _APPENDERS.get(events)
    if a is None:
        a = _APPENDERS[events] = MultiAppender(events)
    return a


def decode_checkpoint(sm: StoredMsg) -> int | None:
    """The position a checkpoint message holds; None (reported) when it is not one."""
    try:
        body = msgpack.unpackb(sm.data, raw=False)
        p = body["p"]
        if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
            return p
    except Exception:  # msgpack raises many unrelated types for bad input
        pass
    corrupt_entry(sm, "checkpoint", "not a checkpoint")
    return None


class MultiAppender:
    """``append_multi`` over an ``EventStore`` (its heads, locks, commits and index); one per
    ``EventStore`` (``appender``)."""

    def __init__(self, events: EventStore) -> None:
        self.events = events
        # stores whose log stream has allow_atomic (seen in its config), dropped when idle (ADR 0016)
        self._atomic: IdleMap[str, bool] = IdleMap(events.settings.quotas.idle_evict_s)

    # --- checkpoints ----------------------------------------------------------------------------
    async def checkpoint(self, store: str, name: str) -> tuple[int | None, int]:
        """(stored position or None, sequence of the checkpoint message or 0)."""
        info = await self.events.existing(store)
        if info is None:
            return None, 0
        subjects = self.events.subjects
        sm = await consistent_get(
            self.events.log,
            subjects.log_stream(store),
            {"last_by_subj": subjects.log_checkpoint(store, name)},
            info.config.replicas,
        )
        if sm is None:
            return None, 0
        return decode_checkpoint(sm), sm.seq

    # --- the transaction ------------------------------------------------------------------------
    async def append_multi(
        self, store: str, appends: list[MultiAppend], checkpoint: CheckpointIn | None
    ) -> MultiResult:
        ev = self.events
        total = sum(len(a.events) for a in appends)
        if total > ev.settings.max_events_per_append:
            raise InvalidRequestError(
                f"at most {ev.settings.max_events_per_append} events per append_multi (all streams together)",
                details={"field": "appends", "reason": "too many events", "count": total},
            )
        await ev.store(store)
        parts = [_Part(a, ev.prepare_commit(store, a.stream_id, a.expected_version, a.events)) for a in appends]
        seen: set[str] = set()
        for p in parts:
            if seen.intersection(p.prepared.ids):
                raise InvalidRequestError(
                    "event ids must be unique within an append_multi",
                    details={"field": "appends", "reason": "duplicate"},
                )
            seen.update(p.prepared.ids)
        done: dict[int, AppendResult] = {}
        # ANY / STREAM_EXISTS appends resent after JetStream's duplicate window: the event-id index
        found = await asyncio.gather(
            *(ev._indexed_append(store, p.req.stream_id, p.prepared.ids) for p in parts if p.prepared.index_ids)
        )
        for i, earlier in zip([i for i, p in enumerate(parts) if p.prepared.index_ids], found, strict=True):
            if earlier is not None:
                done[i] = earlier
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted({(store, p.req.stream_id) for p in parts}):
                await stack.enter_async_context(ev._stream_lock(key))
            return await self._locked(store, parts, checkpoint, done)

    async def _locked(
        self, store: str, parts: list[_Part], checkpoint: CheckpointIn | None, done: dict[int, AppendResult]
    ) -> MultiResult:
        ev = self.events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ev.settings.request_timeout_s * 0.8
        fresh = False  # heads read from the server (not the cache) this round
        losses = 0
        retried_ids = False  # message ids changed once already (ERR_BATCH_DUPLICATE_MSG_ID)
        todo = [i for i in range(len(parts)) if i not in done]
        heads = await asyncio.gather(*(ev.head(store, parts[i].req.stream_id, cached=True) for i in todo))
        for i, h in zip(todo, heads, strict=True):
            parts[i].head = h
        while loop.time() < deadline:
            pending = [i for i in range(len(parts)) if i not in done]
            conflicts = await self._conflicts(store, parts, pending, done, fresh)
            if conflicts is None:  # a cached head disagreed: read them all again
                fresh = True
                continue
            pending = [i for i in pending if i not in done]
            ck_pos, ck_seq = (None, 0) if checkpoint is None else await self.checkpoint(store, checkpoint.name)
            ck_problem = checkpoint is not None and ck_pos is not None and checkpoint.position <= ck_pos
            if ck_problem and not pending and not conflicts and done and checkpoint is not None:
                last = max(r.position for r in done.values())
                if ck_pos == checkpoint.position and ck_seq == last + 1:  # the whole transaction, resent
                    return MultiResult([done[i] for i in range(len(parts))], ck_seq)
            if conflicts or ck_problem:
                details: dict[str, Any] = {}
                text = []
                if conflicts:
                    details["conflicts"] = conflicts
                    for conflict in conflicts:
                        sid, want = conflict["stream_id"], conflict["expected_version"]
                        have = conflict["actual_version"]
                        text.append(f"expected version {want}, stream {sid!r} is at {have}")
                if ck_problem and checkpoint is not None:
                    details["checkpoint"] = {
                        "name": checkpoint.name,
                        "position": checkpoint.position,
                        "stored_position": ck_pos,
                    }
                    text.append(f"checkpoint {checkpoint.name!r} is at {ck_pos}; a new position must be greater")
                raise WrongExpectedVersionError("; ".join(text), details=details)
            if not pending and checkpoint is None:  # every append was stored already: a resend
                return MultiResult([done[i] for i in range(len(parts))], max(r.position for r in done.values()))
            msgs: list[tuple[str, bytes, dict[str, str]]] = []
            for i in pending:
                p = parts[i]
                headers = p.prepared.headers
                headers[H_VERSION] = str(p.head.last + 1 if p.head else 0)
                headers[H_EXPECTED_LAST_SUBJECT_SEQ] = str(p.head.subject_seq if p.head else 0)
                msgs.append((p.prepared.subject, p.prepared.payload, headers))
            if checkpoint is not None:
                body = msgpack.packb({"p": checkpoint.position})
                subject = ev.subjects.log_checkpoint(store, checkpoint.name)
                msgs.append((subject, body, {H_EXPECTED_LAST_SUBJECT_SEQ: str(ck_seq)}))
            try:
                # one message (one commit, or a checkpoint alone) is atomic by itself: no batch needed
                last_seq, duplicate = await self._publish(store, msgs, plain=len(msgs) == 1)
            except JetStreamApiError as exc:
                if exc.err_code in (ERR_WRONG_LAST_SEQUENCE, ERR_INFLIGHT_SAME_SUBJECT):
                    # lost a race (another instance, or a stale cached head): read the heads again
                    losses += 1
                    if losses > 1 or exc.err_code == ERR_INFLIGHT_SAME_SUBJECT:
                        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**losses)))
                    fresh = True
                    await self._refresh(store, parts, pending)
                    continue
                if exc.err_code == ERR_ATOMIC_DISABLED:  # switched off since we looked
                    self._atomic.pop(store, None)
                    continue
                if exc.err_code == ERR_BATCH_DUPLICATE_MSG_ID:
                    if not await self._resolve_duplicates(store, parts, pending, done):
                        if retried_ids:
                            raise
                        # the originals are gone (their streams deleted): these are new appends now
                        retried_ids = True
                        for i in pending:
                            self._new_msg_id(parts[i])
                    await self._refresh(store, parts, [i for i in pending if i not in done])
                    continue
                raise
            except UnavailableError:
                ev.forget_store(store)
                await ev.store(store)  # store_not_found if it was deleted
                raise
            if duplicate:  # one append, a plain publish that JetStream de-duplicated
                i = pending[0]
                original = await ev.log.direct_get(ev.subjects.log_stream(store), {"seq": last_seq})
                if original is not None and original.subject == parts[i].prepared.subject and is_commit(original):
                    c = commit_of(original)
                    done[i] = AppendResult(c.last, c.seq, c.count)
                    await self._index(store, [(parts[i], c.seq)])
                else:  # the original was deleted with its stream: this is a new append now
                    self._new_msg_id(parts[i], last_seq)
                    await self._refresh(store, parts, pending)
                continue
            first_seq = last_seq - len(msgs) + 1  # a batch is stored at consecutive sequences
            written: list[tuple[_Part, int]] = []
            for k, i in enumerate(pending):
                p = parts[i]
                seq = first_seq + k
                commit = Commit(seq, p.head.last + 1 if p.head else 0, len(p.req.events), 0)
                ev._remember((store, p.req.stream_id), commit)
                done[i] = AppendResult(commit.last, seq, commit.count)
                written.append((p, seq))
            await self._index(store, written)
            return MultiResult([done[i] for i in range(len(parts))], last_seq)
        raise UnavailableError("too much contention on the streams; try again", details={"store": store})

    async def _conflicts(
        self, store: str, parts: list[_Part], pending: list[int], done: dict[int, AppendResult], fresh: bool
    ) -> list[dict[str, Any]] | None:
        """The appends whose expectation fails, as the error names them; None when a cached head
        disagreed (then every head is read again). Resends (the stored append at the expected
        version has the same event ids) move to ``done``."""
        out: list[dict[str, Any]] = []
        for i in pending:
            p = parts[i]
            expected = p.req.expected_version
            current = p.head.last if p.head else -1
            if _matches(expected, current):
                continue
            if not fresh:
                await self._refresh(store, parts, pending)
                return None
            if p.prepared.client_ids and expected >= NO_STREAM and current > expected:
                same = await self.events._same_append_at(store, p.req.stream_id, max(expected + 1, 0), p.prepared.ids)
                if same is not None:
                    done[i] = same
                    continue
            out.append({"stream_id": p.req.stream_id, "expected_version": expected, "actual_version": current})
        return out

    async def _refresh(self, store: str, parts: list[_Part], which: list[int]) -> None:
        heads = await asyncio.gather(*(self.events.head(store, parts[i].req.stream_id) for i in which))
        for i, h in zip(which, heads, strict=True):
            parts[i].head = h

    async def _publish(
        self, store: str, msgs: list[tuple[str, bytes, dict[str, str]]], *, plain: bool
    ) -> tuple[int, bool]:
        """(sequence of the last message, whether JetStream de-duplicated it). ``plain``: one
        message (a commit, published as ``stream.append`` does, or a checkpoint alone): an atomic
        batch costs more, and one message is atomic anyway."""
        log_ = self.events.log
        if plain:
            subject, payload, headers = msgs[0]
            ack = await log_.publish(subject, payload, headers)
            return ack.seq, ack.duplicate
        if not isinstance(log_, Log):
            raise UnavailableError("atomic batches need a JetStream log", details={"store": store})
        if self._atomic.get(store) is None:
            await self._allow_atomic(store)
        last, count = await publish_batch(log_, msgs)
        if count != len(msgs):
            raise UnavailableError("JetStream stored a batch of another size; try again", details={"count": count})
        return last, False

    async def _index(self, store: str, written: list[tuple[_Part, int]]) -> None:
        """The event-id index entries of stored appends, as ``stream.append`` writes them."""
        todo = [(p, seq) for p, seq in written if p.prepared.index_ids]
        if todo:
            await asyncio.gather(
                *(self.events._index_append(store, p.req.stream_id, p.prepared.ids[0], seq) for p, seq in todo)
            )

    @staticmethod
    def _new_msg_id(p: _Part, salt: int | None = None) -> None:
        """Another message id for an append whose original was deleted (JetStream would refuse
        the old one for the rest of its duplicate window), as ``stream.append`` does."""
        h = p.prepared.headers
        if H_MSG_ID in h:
            h[H_MSG_ID] = f"{h[H_MSG_ID]}.{salt if salt is not None else (p.head.subject_seq if p.head else 0)}"

    async def _allow_atomic(self, store: str) -> None:
        """Make sure the store's log stream has ``allow_atomic``: switched on for a store made
        before append_multi existed (the stream keeps it). A server that does not know the
        option (before 2.12) would store a batch's messages one by one, so it is refused."""
        log_ = self.events.log
        assert isinstance(log_, Log)
        name = self.events.subjects.log_stream(store)
        cfg = dict((await log_.stream_info(name))["config"])
        if not cfg.get("allow_atomic"):
            cfg["allow_atomic"] = True
            cfg = (await log_.api(f"$JS.API.STREAM.UPDATE.{name}", cfg)).get("config", {})
            if not cfg.get("allow_atomic"):
                raise InvalidRequestError(
                    "append_multi needs a NATS server with JetStream atomic batches (2.12 or later)",
                    details={"field": "appends", "reason": "atomic batches not supported by the server"},
                )
            log.info("store %s: allow_atomic switched on for stream.append_multi", store)
        self._atomic[store] = True

    async def _resolve_duplicates(
        self, store: str, parts: list[_Part], pending: list[int], done: dict[int, AppendResult]
    ) -> bool:
        """Find the stored originals of pending appends whose message id JetStream has seen:
        among each stream's commits of the last duplicate window (the stream's last commit
        first). Returns whether any was found (and moved to ``done``)."""
        ev = self.events
        cfg = (await ev.store(store)).config
        since_ns = time.time_ns() - int(cfg.duplicate_window_s * 1e9) - 5_000_000_000  # clock skew margin
        name = ev.subjects.log_stream(store)
        any_found = False
        for i in pending:
            p = parts[i]
            if not p.prepared.client_ids:
                continue
            sm = await self._recent_with_ids(name, p.prepared.subject, p.prepared.ids, since_ns)
            if sm is not None:
                c = commit_of(sm)
                done[i] = AppendResult(c.last, c.seq, c.count)
                await self._index(store, [(p, c.seq)])
                any_found = True
        return any_found

    async def _recent_with_ids(self, name: str, subject: str, ids: list[str], since_ns: int) -> StoredMsg | None:
        log_ = self.events.log
        head = await log_.direct_get(name, {"last_by_subj": subject})
        if head is None:
            return None
        if is_commit(head) and event_ids(head) == ids:
            return head
        req: dict[str, Any] = {"start_time": _rfc3339(since_ns), "next_by_subj": subject, "batch": RECENT_BATCH}
        while True:
            batch, pending = await log_.direct_batch(name, req)  # type: ignore[arg-type]
            for sm in batch:
                if is_commit(sm) and event_ids(sm) == ids:
                    return sm
            if not batch or pending <= 0 or batch[-1].seq >= head.seq:
                return None
            req = {"seq": batch[-1].seq + 1, "next_by_subj": subject, "batch": RECENT_BATCH}
