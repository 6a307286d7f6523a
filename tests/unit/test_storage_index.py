"""Index records and the causation indexer's messages per event (docs/adr/0025-storage-per-event.md):
compact records are written, records of the previous version are still read, and each kind of
event gets the index messages it needs and no more. Queries over the in-memory log answer the
same from an index written in either format."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import msgpack
import pytest
from nats.aio.client import Client

from esdb_gater.services.causation.store import CausationStore, caused_by, correlated_with, index_entries
from esdb_gater.services.stream.store import EventStore
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import H_COUNT, H_VERSION, encode_events
from esdb_gater.shared.log.fake import FakeClock, FakeLog
from esdb_gater.shared.log.index import IndexEntry, create_index_stream, parse_ref, ref_subject
from esdb_gater.shared.log.jetstream import Log, StoredMsg
from esdb_gater.shared.models.stream import ANY_VERSION, EventIn

S = Subjects()
STORE = "o"


# --- records ------------------------------------------------------------------------------------
def test_entries_are_written_compact() -> None:
    assert msgpack.unpackb(IndexEntry("a-stream", 1234).encode()) == [1234]
    assert msgpack.unpackb(IndexEntry(None, 1234, 7).encode()) == [1234, 7]
    assert len(IndexEntry("order-17", 70_000, 3).encode()) <= 7  # was 21 bytes as a map


@pytest.mark.parametrize(
    ("row", "entry"),
    [
        ({"s": "order-1", "q": 5}, IndexEntry("order-1", 5, None)),  # the stream service, earlier versions
        ({"s": "order-1", "q": 5, "v": 2}, IndexEntry("order-1", 5, 2)),  # the causation indexer, earlier
        ([5], IndexEntry(None, 5, None)),
        ([5, 2], IndexEntry(None, 5, 2)),
    ],
)
def test_records_of_both_versions_are_read(row: Any, entry: IndexEntry) -> None:
    assert IndexEntry.decode(msgpack.packb(row)) == entry


@pytest.mark.parametrize("row", [None, "x", 5, [], [1, 2, 3], ["5"], [-1], [True], [5, None], {"q": 5}])
def test_values_that_are_not_entries_are_refused(row: Any) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        IndexEntry.decode(msgpack.packb(row))


def test_a_causation_record_is_its_subject() -> None:
    wild = S.index_cause(STORE, "evt-1")
    subject = ref_subject(wild, 812)
    assert subject == "esdb.ix.o.cause.evt-1.812"
    assert parse_ref(wild, subject) == IndexEntry(None, 812, None)  # every event of the append with the id
    assert parse_ref(wild, S.index_cause(STORE, "evt-1", "evt-2")) is None  # an earlier version's subject
    assert parse_ref(wild, ref_subject(S.index_cause(STORE, "evt-10"), 812)) is None  # another id
    for tail in ("8x", "٣", "8.1", ""):  # not a position (the last: digits, but not ASCII ones)
        assert parse_ref(wild, "esdb.ix.o.cause.evt-1." + tail) is None


# --- messages per event -----------------------------------------------------------------------------
def _commit(seq: int, first: int, *metas: dict[str, Any], stream: str = "s") -> StoredMsg:
    events = [EventIn(event_type="T", data={"n": i}, metadata=m) for i, m in enumerate(metas)]
    body = encode_events(events, [f"e{seq}-{i}" for i in range(len(metas))])
    return StoredMsg(S.log_subject(STORE, stream), seq, 0, {H_VERSION: str(first), H_COUNT: str(len(metas))}, body)


def _kinds(entries: list[tuple[str, bytes]]) -> list[str]:
    return [subject.split(".")[3] for subject, _ in entries]


def test_a_plain_event_gets_one_id_entry() -> None:
    entries = index_entries(S, STORE, _commit(9, 0, {}), "s")
    assert entries == [(S.index_event_id(STORE, "e9-0"), msgpack.packb([9]))]


def test_each_causation_or_correlation_id_of_an_append_adds_one_empty_record() -> None:
    sm = _commit(
        9,
        4,
        {"causation_id": "c"},
        {"correlation_id": "r"},
        {"causation_id": "c", "correlation_id": "r"},
        {"causation_id": "c2", "correlation_id": "r"},
    )
    entries = index_entries(S, STORE, sm, "s")
    assert _kinds(entries) == ["id", "id", "id", "id", "cause", "corr", "cause"]
    assert [s for s, v in entries if not v] == ["esdb.ix.o.cause.c.9", "esdb.ix.o.corr.r.9", "esdb.ix.o.cause.c2.9"]
    assert all(v == msgpack.packb([9]) for s, v in entries if ".id." in s)


@pytest.mark.parametrize("value", [None, "", True, False, 1.5, {"a": 1}, ["x"], "x" * 1025])
def test_ids_that_are_not_indexed_add_nothing(value: Any) -> None:
    entries = index_entries(S, STORE, _commit(3, 0, {"causation_id": value, "correlation_id": value}), "s")
    assert _kinds(entries) == ["id"]


def test_integer_ids_are_indexed_as_text() -> None:
    entries = index_entries(S, STORE, _commit(3, 0, {"causation_id": 42}), "s")
    assert [s for s, _ in entries][1] == "esdb.ix.o.cause.42.3"


def test_link_copies_get_their_id_entry_only() -> None:
    sm = _commit(3, 0, {"causation_id": "c", "correlation_id": "r"}, stream="$link:m")
    assert _kinds(index_entries(S, STORE, sm, "$link:m")) == ["id"]


def test_a_message_that_is_not_a_commit_gets_nothing() -> None:
    sm = StoredMsg(S.log_subject(STORE, "s"), 3, 0, {}, b"raw")
    assert index_entries(S, STORE, sm, "s") == []


# --- queries over an index of either format ---------------------------------------------------------
def _old_entries(sm: StoredMsg, stream_id: str) -> list[tuple[str, bytes]]:
    """What the previous version's indexer wrote for a commit (maps, event ids in the subjects)."""
    out = []
    rows = msgpack.unpackb(sm.data, raw=False)
    first = int(sm.headers[H_VERSION])
    for i, row in enumerate(rows):
        value = msgpack.packb({"s": stream_id, "q": sm.seq, "v": first + i})
        out.append((S.index_event_id(STORE, row["i"]), value))
        meta = row.get("m") or {}
        if meta.get("causation_id"):
            out.append((S.index_cause(STORE, meta["causation_id"], row["i"]), value))
        if meta.get("correlation_id"):
            out.append((S.index_corr(STORE, meta["correlation_id"], row["i"]), value))
    return out


async def _seeded(old: bool) -> CausationStore:
    """a (no ids) → b → c, and d (correlation only): b and c in one append. The index written by
    this version, or by the previous one (``old``)."""
    log = FakeLog(clock=FakeClock(start_ns=time.time_ns()))
    settings = Settings(auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0))
    es = EventStore(log, S, settings)
    await es.append(STORE, "order-1", ANY_VERSION, [EventIn(event_id="a", event_type="Placed", data={})])
    await es.append(
        STORE,
        "pay-1",
        ANY_VERSION,
        [
            EventIn(event_id="b", event_type="Asked", data={}, metadata={"causation_id": "a", "correlation_id": "k"}),
            EventIn(event_id="c", event_type="Paid", data={}, metadata={"causation_id": "b", "correlation_id": "k"}),
        ],
    )
    await es.append(
        STORE, "x", ANY_VERSION, [EventIn(event_id="d", event_type="D", data={}, metadata={"correlation_id": "k"})]
    )
    cfg = (await es.store(STORE)).config
    await create_index_stream(log, S, STORE, cfg)
    batch, _ = await log.direct_batch(S.log_stream(STORE), {"seq": 1, "batch": 100, "next_by_subj": S.log_all(STORE)})
    for sm in batch:
        sid = S.stream_id_of(sm.subject)
        for subject, value in _old_entries(sm, sid) if old else index_entries(S, STORE, sm, sid):
            await log.publish(subject, value, {})
    nc = cast(Client, SimpleNamespace(jetstream=lambda: None))
    return CausationStore(nc, cast(Log, log), S, settings)


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return sorted(ev["event_id"] for ev in events)


@pytest.mark.parametrize("old", [False, True], ids=["this-version", "previous-version"])
async def test_queries_answer_the_same_from_either_format(old: bool) -> None:
    db = await _seeded(old)
    assert _ids(await db.events(STORE, await db.effects(STORE, "a"), caused_by("a"))) == ["b"]
    assert _ids(await db.events(STORE, await db.effects(STORE, "b"), caused_by("b"))) == ["c"]
    assert await db.effects(STORE, "c") == [] and await db.effects(STORE, "unknown") == []
    assert _ids(await db.events(STORE, await db.correlated(STORE, "k"), correlated_with("k"))) == ["b", "c", "d"]
    for eid, stream, version in (("a", "order-1", 0), ("b", "pay-1", 0), ("c", "pay-1", 1), ("d", "x", 0)):
        ev = await db.event(STORE, eid)
        assert ev is not None and (ev["event_id"], ev["stream_id"], ev["version"]) == (eid, stream, version)
    assert await db.event(STORE, "unknown") is None


async def test_only_the_events_of_an_append_that_carry_the_id_are_found() -> None:
    """b and c share an append: a record names the append, the id picks the events. A record
    whose append holds no event with the id (stale, or foreign) finds nothing."""
    db = await _seeded(old=False)
    (record,) = await db.effects(STORE, "b")
    assert record.version is None
    assert _ids(await db.events(STORE, [record], caused_by("b"))) == ["c"]
    assert _ids(await db.events(STORE, [record], caused_by("a"))) == ["b"]
    assert _ids(await db.events(STORE, [record], caused_by("d"))) == []
    assert _ids(await db.events(STORE, [IndexEntry(None, record.position, 0)], caused_by("b"))) == []  # b: a's
    assert _ids(await db.events(STORE, [IndexEntry(None, 10_000)])) == []  # no such position


async def test_index_messages_and_bytes_per_event() -> None:
    """The seed's index: a plain event costs one id entry, each causation/correlation id one more
    record with an empty value; no value is larger than a few bytes."""
    db = await _seeded(old=False)
    log = cast(FakeLog, db.log)
    name = S.index_stream(STORE)
    batch, _ = await log.direct_batch(name, {"seq": 1, "batch": 100, "next_by_subj": S.index_root(STORE) + ".>"})
    kinds = sorted(sm.subject.split(".")[3] for sm in batch)
    assert kinds == ["cause", "cause", "corr", "corr", "id", "id", "id", "id"]  # b and c: one corr record
    assert max(len(sm.data) for sm in batch) <= 3
    assert all(sm.data == b"" for sm in batch if ".id." not in sm.subject)
