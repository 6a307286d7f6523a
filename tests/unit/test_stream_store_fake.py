"""The stream service's EventStore (services/stream/store.py) over the in-memory log port: appends
with expected versions, idempotent resends, reads, deletes and time queries, without NATS."""

from __future__ import annotations

import time

import pytest

from esdb_gater.services.stream.store import AppendResult, EventStore
from esdb_gater.shared.core.errors import (
    InvalidRequestError,
    StoreNotFoundError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.settings import QuotaSettings, Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.fake import FakeClock, FakeLog
from esdb_gater.shared.models.stream import ANY_VERSION, NO_STREAM, STREAM_EXISTS, EventIn

S = Subjects()
WINDOW_S = 1.0  # the stores' duplicate window in these tests


def _store(*, auto_create: bool = True, clock: FakeClock | None = None) -> tuple[EventStore, FakeLog, FakeClock]:
    # the log's clock runs an hour behind the wall clock: commits are "old" for the index's repair
    clock = clock or FakeClock(start_ns=time.time_ns() - 3600 * 10**9)
    log = FakeLog(clock=clock)
    settings = Settings(
        auto_create_stores=auto_create,
        default_store=StoreConfig(duplicate_window_s=WINDOW_S),
        quotas=QuotaSettings(auto_created_stores=0),
    )
    return EventStore(log, S, settings), log, clock


def _events(*ids: str, n: int = 0) -> list[EventIn]:
    if ids:
        return [EventIn(event_id=i, event_type="T", data={"id": i}) for i in ids]
    return [EventIn(event_type="T", data={"n": k}) for k in range(n)]


def _versions(events: list[dict[str, object]]) -> list[object]:
    return [ev["version"] for ev in events]


async def test_appends_number_events_and_reads_return_them() -> None:
    es, _, _ = _store()
    r1 = await es.append("o", "s1", ANY_VERSION, _events(n=3))
    r2 = await es.append("o", "s1", ANY_VERSION, _events(n=2))
    assert (r1.version, r1.count, r2.version, r2.count) == (2, 3, 4, 2)
    assert r2.position > r1.position
    events = await es.read("o", "s1", 0, 100, "forward")
    assert _versions(events) == [0, 1, 2, 3, 4]
    assert [ev["data"] for ev in events[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {ev["position"] for ev in events} == {r1.position, r2.position}  # one commit per append
    assert all(ev["stream_id"] == "s1" and ev["event_type"] == "T" for ev in events)
    assert await es.version("o", "s1") == 4 and await es.version("o", "other") == -1


async def test_expected_versions() -> None:
    es, _, _ = _store()
    with pytest.raises(WrongExpectedVersionError):
        await es.append("o", "s", STREAM_EXISTS, _events(n=1))
    assert (await es.append("o", "s", NO_STREAM, _events(n=1))).version == 0
    with pytest.raises(WrongExpectedVersionError) as err:
        await es.append("o", "s", NO_STREAM, _events(n=1))
    assert err.value.details == {"expected": -1, "actual": 0, "stream_id": "s"}
    assert (await es.append("o", "s", 0, _events(n=2))).version == 2  # the exact version
    with pytest.raises(WrongExpectedVersionError) as err:
        await es.append("o", "s", 0, _events(n=1))  # stale
    assert err.value.details == {"expected": 0, "actual": 2, "stream_id": "s"}
    assert (await es.append("o", "s", STREAM_EXISTS, _events(n=1))).version == 3
    assert (await es.append("o", "s", ANY_VERSION, _events(n=1))).version == 4


async def test_another_writer_between_head_and_publish_is_caught_by_the_log() -> None:
    """The head is cached; a commit written by another instance makes the publish's
    expected-last-subject-sequence fail, and the append re-reads the head."""
    es, _, _ = _store()
    other, _, _ = _store()
    other.log = es.log  # a second instance on the same log
    other.ids.log = es.log
    await es.append("o", "s", NO_STREAM, _events(n=1))
    await other.append("o", "s", 0, _events(n=1))
    assert (await es.append("o", "s", ANY_VERSION, _events(n=1))).version == 2  # cached head was 0
    with pytest.raises(WrongExpectedVersionError) as err:
        await other.append("o", "s", 1, _events(n=1))
    assert err.value.details["actual"] == 2


async def test_an_append_is_checked_before_anything_is_written() -> None:
    es, log, _ = _store()
    with pytest.raises(InvalidRequestError):
        await es.append("o", "s", ANY_VERSION, _events("a", "a"))  # ids unique within an append
    with pytest.raises(InvalidRequestError):
        await es.append("o", "s", ANY_VERSION, _events(n=1001))
    info = await log.stream_info(S.log_stream("o"))
    assert info["state"]["messages"] == 0


async def test_a_resend_within_the_duplicate_window_is_stored_once() -> None:
    es, log, _ = _store()
    first = await es.append("o", "s", NO_STREAM, _events("a", "b"))
    for expected in (NO_STREAM, ANY_VERSION, STREAM_EXISTS):
        assert await es.append("o", "s", expected, _events("a", "b")) == first
    es.forget_store("o")
    es._heads.clear()  # another instance: nothing cached
    assert await es.append("o", "s", NO_STREAM, _events("a", "b")) == first
    assert await es.version("o", "s") == 1
    assert (await log.stream_info(S.log_stream("o")))["state"]["messages"] == 1


async def test_a_resend_after_the_duplicate_window_is_recognised() -> None:
    es, log, clock = _store()
    first = await es.append("o", "s", NO_STREAM, _events("a"))
    await es.append("o", "s", 0, _events("b"))
    clock.advance(WINDOW_S * 2)  # JetStream has forgotten the message ids
    assert await es.append("o", "s", ANY_VERSION, _events("a")) == first  # through the event-id index
    assert await es.append("o", "s", NO_STREAM, _events("a")) == first  # found at its version in the log
    with pytest.raises(WrongExpectedVersionError):
        await es.append("o", "s", NO_STREAM, _events("a", "x"))  # other ids: a real conflict
    assert await es.version("o", "s") == 1
    assert (await log.stream_info(S.log_stream("o")))["state"]["messages"] == 2


async def test_a_lost_index_entry_is_found_in_the_log_and_written_again() -> None:
    """The writer died between the log and the index (ADR 0017)."""
    es, log, clock = _store()
    first = await es.append("o", "s", ANY_VERSION, _events("a"))
    index = S.index_stream("o")
    assert await log.purge(index, subject=S.index_event_id("o", "a")) == 1
    clock.advance(WINDOW_S * 2)
    assert await es.append("o", "s", ANY_VERSION, _events("a")) == first
    assert await log.direct_get(index, {"last_by_subj": S.index_event_id("o", "a")}) is not None
    assert await es.version("o", "s") == 0


async def test_ids_of_a_deleted_stream_make_a_new_append() -> None:
    es, _, _ = _store()
    first = await es.append("o", "s", ANY_VERSION, _events("a"))
    await es.delete("o", "s")
    # JetStream still remembers the message id; the append sees its original is gone
    again = await es.append("o", "s", NO_STREAM, _events("a"))
    assert (again.version, again.count) == (0, 1) and again.position > first.position
    assert _versions(await es.read("o", "s", 0, 10, "forward")) == [0]


async def test_read_forward_and_backward_in_pages() -> None:
    es, _, _ = _store()
    for _ in range(4):
        await es.append("o", "s", ANY_VERSION, _events(n=3))  # versions 0..11 in 4 commits
    assert _versions(await es.read("o", "s", 0, 5, "forward")) == [0, 1, 2, 3, 4]
    assert _versions(await es.read("o", "s", 5, 5, "forward")) == [5, 6, 7, 8, 9]
    assert _versions(await es.read("o", "s", 10, 5, "forward")) == [10, 11]
    assert await es.read("o", "s", 12, 5, "forward") == []
    assert _versions(await es.read("o", "s", -1, 5, "backward")) == [11, 10, 9, 8, 7]
    assert _versions(await es.read("o", "s", 6, 5, "backward")) == [6, 5, 4, 3, 2]
    assert _versions(await es.read("o", "s", 1, 5, "backward")) == [1, 0]
    with pytest.raises(InvalidRequestError):
        await es.read("o", "s", -1, 5, "forward")


async def test_reading_a_stream_that_does_not_exist() -> None:
    es, _, _ = _store()
    await es.append("o", "s", ANY_VERSION, _events(n=1))
    for direction in ("forward", "backward"):
        with pytest.raises(StreamNotFoundError):
            await es.read("o", "missing", 0, 5, direction)
    with pytest.raises(StreamNotFoundError):  # a store that does not exist reads as an empty one
        await es.read("never", "s", 0, 5, "forward")
    assert await es.list_streams("never", None, 10) == ([], None)


async def test_delete_removes_a_stream() -> None:
    es, _, _ = _store()
    await es.append("o", "s", ANY_VERSION, _events(n=2))
    await es.append("o", "t", ANY_VERSION, _events(n=1))
    await es.delete("o", "s")
    await es.delete("o", "missing")  # ok when missing
    assert await es.version("o", "s") == -1
    with pytest.raises(StreamNotFoundError):
        await es.read("o", "s", 0, 5, "forward")
    assert (await es.append("o", "s", NO_STREAM, _events(n=1))).version == 0  # starts again
    assert await es.version("o", "t") == 0


async def test_list_streams_sorted_in_pages() -> None:
    es, _, _ = _store()
    for sid in ("b", "a", "é", "c"):
        await es.append("o", sid, ANY_VERSION, _events(n=1))
    assert await es.list_streams("o", None, 2) == (["a", "b"], "b")
    assert await es.list_streams("o", "b", 2) == (["c", "é"], None)


async def test_corrupt_entries_are_skipped_and_the_stream_stays_appendable() -> None:
    es, log, _ = _store()
    await es.append("o", "s", ANY_VERSION, _events(n=2))
    await log.publish(S.log_subject("o", "s"), b"not a commit", {})  # someone published raw into the log
    assert _versions(await es.read("o", "s", 0, 10, "forward")) == [0, 1]
    assert await es.version("o", "s") == 1
    r = await es.append("o", "s", 1, _events(n=1))
    assert r.version == 2
    assert _versions(await es.read("o", "s", -1, 10, "backward")) == [2, 1, 0]


async def test_version_at_and_reads_by_time() -> None:
    es, _, clock = _store()
    stamps = []
    for _ in range(3):
        r = await es.append("o", "s", ANY_VERSION, _events(n=2))  # versions 0-1, 2-3, 4-5
        events = await es.read("o", "s", r.version, 1, "forward")
        stamps.append(int(str(events[0]["epoch_us"])))
        clock.advance(1.0)
    assert await es.version_at("o", "s", stamps[0] - 1) == -1
    assert await es.version_at("o", "s", stamps[0]) == 1
    assert await es.version_at("o", "s", stamps[1] + 10) == 3
    assert await es.version_at("o", "s", stamps[2] + 10**9) == 5
    rows = await es.read_time_range("o", "s", stamps[1], stamps[2], "forward", 10)
    assert _versions(rows) == [2, 3, 4, 5]
    rows = await es.read_time_range("o", "s", None, stamps[1], "backward", 3)
    assert _versions(rows) == [3, 2, 1]


async def test_stores_are_made_on_first_use_only_when_configured() -> None:
    es, _, _ = _store(auto_create=False)
    with pytest.raises(StoreNotFoundError):
        await es.append("o", "s", ANY_VERSION, _events(n=1))
    with pytest.raises(StoreNotFoundError):
        await es.read("o", "s", 0, 1, "forward")
    info, created = await es.create_store("o", StoreConfig(storage="memory", duplicate_window_s=5))
    assert created and info.config.storage == "memory" and info.config.duplicate_window_s == 5
    assert (await es.create_store("o", StoreConfig()))[1] is False  # idempotent: the existing one is kept
    await es.append("o", "s", ANY_VERSION, _events(n=3))
    await es.append("o", "t", ANY_VERSION, _events(n=1))
    _, messages, streams = await es.store_stats("o")
    assert (messages, streams) == (2, 2)


async def test_reindex_rebuilds_the_event_id_index_from_the_log() -> None:
    es, log, _ = _store()
    a = await es.append("o", "s", ANY_VERSION, _events("a"))
    await es.append("o", "s", ANY_VERSION, _events(n=1))  # ids made by the service: not indexed
    await es.append("o", "t", ANY_VERSION, _events("b", "c"))
    await log.purge(S.index_stream("o"))
    result = await es.reindex("o")
    assert (result.scanned, result.indexed, result.checkpoint) == (3, 2, 3)
    assert await es.append("o", "s", ANY_VERSION, _events("a")) == AppendResult(a.version, a.position, a.count)
