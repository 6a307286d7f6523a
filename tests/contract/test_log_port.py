"""The log port's contract (shared/log/port.py): what JetStream answers, and so what FakeLog must.

Every test runs against the fake and against the session's nats-server (``backend`` in
conftest.py); a behaviour the fake offers belongs here."""

from __future__ import annotations

import asyncio
import time

import pytest

from esdb_gater.shared.core.errors import PayloadTooLargeError, UnavailableError
from esdb_gater.shared.log.jetstream import (
    ERR_BAD_REQUEST,
    ERR_REPLICAS_NOT_SUPPORTED,
    ERR_STREAM_INVALID_CONFIG,
    ERR_STREAM_NAME_IN_USE,
    ERR_STREAM_NOT_FOUND,
    ERR_SUBJECTS_OVERLAP,
    ERR_WRONG_LAST_SEQUENCE,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    H_MSG_ID,
    JetStreamApiError,
    parse_ts_ns,
)
from esdb_gater.shared.log.port import StoredMsg
from tests.contract.conftest import MAX_PAYLOAD, Backend

H_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
WINDOW_NS = 100_000_000  # the shortest duplicate window and max_age JetStream accepts


async def _api_error(coro: object) -> JetStreamApiError:
    with pytest.raises(JetStreamApiError) as err:
        await coro  # type: ignore[misc]
    return err.value


async def _fill(b: Backend, stream: str = "s", subjects: tuple[str, ...] = ("a", "b", "a", "c", "a")) -> list[int]:
    """One message per subject token, bodies ``m0``, ``m1``...; returns their sequences."""
    seqs = []
    for i, tok in enumerate(subjects):
        ack = await b.log.publish(b.subject(stream, tok), f"m{i}".encode(), {})
        seqs.append(ack.seq)
    return seqs


def _seqs(msgs: list[StoredMsg]) -> list[int]:
    return [m.seq for m in msgs]


# --- streams ----------------------------------------------------------------------------------------


async def test_add_stream_fills_in_defaults_and_is_idempotent(backend: Backend) -> None:
    info = await backend.log.add_stream({"name": backend.name(), "subjects": [backend.subject("s", ">")]})
    cfg = info["config"]
    assert cfg["name"] == backend.name() and cfg["subjects"] == [backend.subject("s", ">")]
    assert (cfg["retention"], cfg["discard"], cfg["storage"], cfg["num_replicas"]) == ("limits", "old", "file", 1)
    assert (cfg["max_msgs"], cfg["max_bytes"], cfg["max_msgs_per_subject"], cfg["max_age"]) == (-1, -1, -1, 0)
    assert (cfg["duplicate_window"], cfg["allow_direct"]) == (120_000_000_000, False)
    assert info["state"]["messages"] == 0 and info["state"]["last_seq"] == 0
    again = await backend.log.add_stream({"name": backend.name(), "subjects": [backend.subject("s", ">")]})
    assert again["config"] == cfg
    other = await backend.log.add_stream({"name": backend.name("bare")})
    assert other["config"]["subjects"] == [backend.name("bare")]  # no subjects: the stream's name
    aged = await backend.add("aged", max_age=1_000_000_000, max_msgs=0)
    cfg = (await backend.log.stream_info(aged))["config"]
    assert (cfg["duplicate_window"], cfg["max_msgs"]) == (1_000_000_000, -1)  # the window is at most max_age


async def test_a_kv_bucket_stream_keeps_the_last_value_per_key(backend: Backend) -> None:
    name = await backend.add(
        "kv",
        max_msgs_per_subject=1,
        discard="new",  # applies to max_msgs / max_bytes, not to the per-subject limit
        allow_rollup_hdrs=True,
        deny_delete=True,
        max_msgs=-1,
        max_bytes=-1,
    )
    for value in (b"1", b"2"):
        await backend.log.publish(backend.subject("kv", "k"), value, {})
    msgs, _ = await backend.log.direct_batch(name, {"multi_last": [backend.subject("kv", ">")]})
    assert [(m.seq, m.data) for m in msgs] == [(2, b"2")]


async def test_add_stream_refuses_another_config_under_a_used_name(backend: Backend) -> None:
    await backend.add()
    err = await _api_error(backend.add(max_msgs=5))
    assert (err.err_code, err.js_status) == (ERR_STREAM_NAME_IN_USE, 400)
    assert err.description == "stream name already in use with a different configuration"


async def test_add_stream_refuses_overlapping_subjects(backend: Backend) -> None:
    await backend.add("s")
    err = await _api_error(backend.log.add_stream({"name": backend.name("t"), "subjects": [backend.subject("*", "x")]}))
    assert (err.err_code, err.js_status, err.description) == (
        ERR_SUBJECTS_OVERLAP,
        400,
        "subjects overlap with an existing stream",
    )
    await backend.log.add_stream({"name": backend.name("t"), "subjects": [backend.subject("t", "x")]})  # disjoint


@pytest.mark.parametrize(
    ("config", "code", "description"),
    [
        ({"num_replicas": 3}, ERR_REPLICAS_NOT_SUPPORTED, "replicas > 1 not supported in non-clustered mode"),
        ({"max_age": 50_000_000}, ERR_STREAM_INVALID_CONFIG, "max age needs to be >= 100ms"),
        (
            {"max_age": 1_000_000_000, "duplicate_window": 2_000_000_000},
            ERR_STREAM_INVALID_CONFIG,
            "duplicates window can not be larger then max age",
        ),
        ({"duplicate_window": 50_000_000}, ERR_STREAM_INVALID_CONFIG, "duplicates window needs to be >= 100ms"),
    ],
)
async def test_add_stream_refuses_invalid_configs(
    backend: Backend, config: dict[str, int], code: int, description: str
) -> None:
    err = await _api_error(backend.add("s", **config))
    assert (err.err_code, err.description) == (code, description)


async def test_a_stream_that_does_not_exist(backend: Backend) -> None:
    missing = backend.name("missing")
    for call in (
        backend.log.stream_info(missing),
        backend.log.purge(missing),
        backend.log.leader_get(missing, {"seq": 1}),
    ):
        err = await _api_error(call)
        assert (err.err_code, err.js_status, err.description) == (ERR_STREAM_NOT_FOUND, 404, "stream not found")
    with pytest.raises(UnavailableError):  # nobody answers Direct Gets of a stream that is not there
        await backend.log.direct_get(missing, {"seq": 1})
    with pytest.raises(UnavailableError):
        await backend.log.direct_batch(missing, {"seq": 1, "batch": 5})
    with pytest.raises(UnavailableError):  # and nobody takes a publish no stream listens to
        await backend.log.publish(backend.subject("missing", "x"), b"x", {})


async def test_direct_gets_need_allow_direct(backend: Backend) -> None:
    name = await backend.add(allow_direct=False)
    await _fill(backend)
    with pytest.raises(UnavailableError):
        await backend.log.direct_get(name, {"seq": 1})
    assert (await backend.log.leader_get(name, {"seq": 1})) is not None  # the leader answers anyway


async def test_stream_state_and_subject_listing(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    info = await backend.log.stream_info(name)
    st = info["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"], st["num_subjects"]) == (5, 1, 5, 3)
    assert "subjects" not in st and (info.get("total"), info.get("offset"), info.get("limit")) == (0, 0, 0)
    info = await backend.log.stream_info(name, subjects_filter=backend.subject("s", "*"))
    assert info["state"].get("subjects") == {backend.subject("s", x): n for x, n in (("a", 3), ("b", 1), ("c", 1))}
    assert (info.get("total"), info.get("offset"), info.get("limit")) == (3, 0, 100_000)
    page = await backend.log.stream_info(name, subjects_filter=backend.subject("s", "*"), offset=1)  # sorted pages
    assert page["state"].get("subjects") == {backend.subject("s", "b"): 1, backend.subject("s", "c"): 1}
    assert (page.get("total"), page.get("offset")) == (3, 1)
    none = await backend.log.stream_info(name, subjects_filter=backend.subject("s", "zz"))
    assert "subjects" not in none["state"] and none.get("total") == 0


async def test_stream_names_and_list_filter_by_subject_overlap(backend: Backend) -> None:
    await backend.add("b")
    await backend.add("a")
    names = await backend.log.stream_names(subject=backend.subject(">"))
    assert names["streams"] == [backend.name("a"), backend.name("b")]  # sorted by name
    assert (names.get("total"), names.get("offset"), names.get("limit")) == (2, 0, 1024)
    only_b = await backend.log.stream_names(subject=backend.subject("b", "x"))
    assert only_b["streams"] == [backend.name("b")]
    listed = await backend.log.list_streams(subject=backend.subject("*", "y"))
    assert [si["config"]["name"] for si in listed["streams"] or []] == [backend.name("a"), backend.name("b")]
    assert (listed.get("total"), listed.get("limit")) == (2, 256)
    assert all(si["state"]["messages"] == 0 for si in listed["streams"] or [])
    second = await backend.log.stream_names(subject=backend.subject(">"), offset=1)
    assert second["streams"] == [backend.name("b")] and second.get("offset") == 1
    empty_names = await backend.log.stream_names(subject=backend.subject("none", ">"))
    empty_list = await backend.log.list_streams(subject=backend.subject("none", ">"))
    assert (empty_names["streams"], empty_names.get("total")) == (None, 0)  # JetStream answers null here...
    assert (empty_list["streams"], empty_list.get("total")) == ([], 0)  # ...and an empty list there


# --- publish ------------------------------------------------------------------------------------------


async def test_publish_numbers_messages_and_stamps_them_with_the_time(backend: Backend) -> None:
    name = await backend.add()
    before = time.time_ns() - 5_000_000  # a little leeway for the server's clock
    acks = [await backend.log.publish(backend.subject("s", "a"), b"x", {"Esdb-Version": str(i)}) for i in range(3)]
    after = time.time_ns() + 5_000_000
    assert [(a.seq, a.duplicate) for a in acks] == [(1, False), (2, False), (3, False)]
    msgs = [await backend.log.direct_get(name, {"seq": s}) for s in (1, 2, 3)]
    stamps = [m.ts_ns for m in msgs if m is not None]
    assert len(stamps) == 3 and stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    first = msgs[0]
    assert first is not None and first.headers["Esdb-Version"] == "0" and first.data == b"x"
    assert parse_ts_ns(first.headers["Nats-Time-Stamp"]) == first.ts_ns
    assert (first.headers["Nats-Stream"], first.headers["Nats-Subject"], first.headers["Nats-Sequence"]) == (
        name,
        backend.subject("s", "a"),
        "1",
    )


async def test_expected_last_subject_sequence(backend: Backend) -> None:
    await backend.add()
    a, b = backend.subject("s", "a"), backend.subject("s", "b")
    assert (await backend.log.publish(a, b"1", {H_EXPECTED_LAST_SUBJECT_SEQ: "0"})).seq == 1  # 0: no message yet
    assert (await backend.log.publish(b, b"2", {})).seq == 2
    err = await _api_error(backend.log.publish(a, b"3", {H_EXPECTED_LAST_SUBJECT_SEQ: "0"}))
    assert (err.err_code, err.js_status, err.description) == (ERR_WRONG_LAST_SEQUENCE, 400, "wrong last sequence: 1")
    err = await _api_error(backend.log.publish(a, b"3", {H_EXPECTED_LAST_SUBJECT_SEQ: "2"}))  # 2 is b's
    assert err.description == "wrong last sequence: 1"
    assert (await backend.log.publish(a, b"3", {H_EXPECTED_LAST_SUBJECT_SEQ: "1"})).seq == 3
    err = await _api_error(backend.log.publish(backend.subject("s", "new"), b"", {H_EXPECTED_LAST_SUBJECT_SEQ: "7"}))
    assert err.description == "wrong last sequence: 0"
    err = await _api_error(backend.log.publish(a, b"", {H_EXPECTED_LAST_SUBJECT_SEQ: "three"}))  # not a number
    assert err.description == "wrong last sequence: 3"


async def test_expected_last_sequence_of_the_stream(backend: Backend) -> None:
    await backend.add()
    await _fill(backend, subjects=("a", "b"))
    err = await _api_error(backend.log.publish(backend.subject("s", "a"), b"", {H_EXPECTED_LAST_SEQ: "1"}))
    assert (err.err_code, err.description) == (ERR_WRONG_LAST_SEQUENCE, "wrong last sequence: 2")
    assert (await backend.log.publish(backend.subject("s", "c"), b"", {H_EXPECTED_LAST_SEQ: "2"})).seq == 3


async def test_a_msg_id_is_stored_once_within_the_duplicate_window(backend: Backend) -> None:
    name = await backend.add()
    a = backend.subject("s", "a")
    first = await backend.log.publish(a, b"1", {H_MSG_ID: "m1"})
    again = await backend.log.publish(a, b"other body", {H_MSG_ID: "m1"})
    elsewhere = await backend.log.publish(backend.subject("s", "b"), b"", {H_MSG_ID: "m1"})  # the id is per stream
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True) and (elsewhere.seq, elsewhere.duplicate) == (1, True)
    assert (await backend.log.stream_info(name))["state"]["messages"] == 1
    # The expectations are checked first: a resend that expects the old last sequence is refused.
    err = await _api_error(backend.log.publish(a, b"1", {H_MSG_ID: "m1", H_EXPECTED_LAST_SUBJECT_SEQ: "0"}))
    assert err.err_code == ERR_WRONG_LAST_SEQUENCE
    same = await backend.log.publish(a, b"1", {H_MSG_ID: "m1", H_EXPECTED_LAST_SUBJECT_SEQ: "1"})
    assert (same.seq, same.duplicate) == (1, True)
    stored = await backend.log.direct_get(name, {"seq": 1})
    assert stored is not None and stored.data == b"1" and stored.headers[H_MSG_ID] == "m1"


async def test_a_msg_id_outlives_a_purge_of_its_message(backend: Backend) -> None:
    name = await backend.add()
    await backend.log.publish(backend.subject("s", "a"), b"1", {H_MSG_ID: "m1"})
    assert await backend.log.purge(name) == 1
    ack = await backend.log.publish(backend.subject("s", "a"), b"1", {H_MSG_ID: "m1"})
    assert (ack.seq, ack.duplicate) == (1, True)
    assert await backend.log.direct_get(name, {"seq": 1}) is None


async def test_the_duplicate_window_ends(backend: Backend) -> None:
    await backend.add(duplicate_window=WINDOW_NS)
    a = backend.subject("s", "a")
    await backend.log.publish(a, b"1", {H_MSG_ID: "m1"})
    assert (await backend.log.publish(a, b"1", {H_MSG_ID: "m1"})).duplicate
    for _ in range(100):  # the server forgets ids on a timer: wait for it, with a bound
        await backend.wait(0.05)
        ack = await backend.log.publish(a, b"1", {H_MSG_ID: "m1"})
        if not ack.duplicate:
            break
    assert (ack.seq, ack.duplicate) == (2, False) and backend.waited >= WINDOW_NS / 1e9


async def test_a_payload_over_max_payload_is_refused(backend: Backend) -> None:
    name = await backend.add()
    with pytest.raises(PayloadTooLargeError):
        await backend.log.publish(backend.subject("s", "a"), b"x" * (MAX_PAYLOAD + 1), {})
    assert (await backend.log.stream_info(name))["state"]["messages"] == 0


# --- limits --------------------------------------------------------------------------------------------


async def test_max_msgs_per_subject_keeps_the_last(backend: Backend) -> None:
    name = await backend.add(max_msgs_per_subject=1)
    await _fill(backend)  # a, b, a, c, a
    st = (await backend.log.stream_info(name))["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"]) == (3, 2, 5)
    assert await backend.log.direct_get(name, {"seq": 1}) is None
    last = await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "a")})
    assert last is not None and (last.seq, last.data) == (5, b"m4")


async def test_max_msgs_drops_the_oldest(backend: Backend) -> None:
    name = await backend.add(max_msgs=2)
    await _fill(backend)
    st = (await backend.log.stream_info(name))["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"]) == (2, 4, 5)


async def test_max_age_expires_messages(backend: Backend) -> None:
    name = await backend.add(max_age=WINDOW_NS)
    await _fill(backend, subjects=("a",))
    for _ in range(100):  # the server expires on a timer: wait for it, with a bound
        await backend.wait(0.05)
        if (await backend.log.stream_info(name))["state"]["messages"] == 0:
            break
    st = (await backend.log.stream_info(name))["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"]) == (0, 2, 1) and backend.waited >= WINDOW_NS / 1e9
    assert await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "a")}) is None


# --- Direct Get ----------------------------------------------------------------------------------------


async def test_direct_get_by_sequence(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    m = await backend.log.direct_get(name, {"seq": 2})
    assert m is not None and (m.seq, m.subject, m.data) == (2, backend.subject("s", "b"), b"m1")
    assert await backend.log.direct_get(name, {"seq": 99}) is None
    await backend.log.purge(name, subject=backend.subject("s", "b"))
    assert await backend.log.direct_get(name, {"seq": 2}) is None  # no stepping over a gap without next_by_subj


async def test_direct_get_last_by_subject(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    m = await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "a")})
    assert m is not None and (m.seq, m.data) == (5, b"m4")
    m = await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "*")})  # a wildcard: the last of all
    assert m is not None and m.seq == 5
    m = await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "b")})
    assert m is not None and m.seq == 2
    assert await backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "none")}) is None


async def test_direct_get_next_by_subject(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    m = await backend.log.direct_get(name, {"seq": 2, "next_by_subj": backend.subject("s", "a")})
    assert m is not None and m.seq == 3
    m = await backend.log.direct_get(name, {"next_by_subj": backend.subject("s", "c")})  # no seq: from the start
    assert m is not None and m.seq == 4
    m = await backend.log.direct_get(name, {"seq": 4, "next_by_subj": backend.subject("s", ">")})
    assert m is not None and m.seq == 4
    assert await backend.log.direct_get(name, {"seq": 6, "next_by_subj": backend.subject("s", "a")}) is None
    assert await backend.log.direct_get(name, {"seq": 1, "next_by_subj": backend.subject("s", "none")}) is None


def _rfc3339(ns: int) -> str:
    from datetime import UTC, datetime

    sec, frac = divmod(ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


async def test_direct_get_by_start_time(backend: Backend) -> None:
    name = await backend.add()
    for tok in ("a", "b", "a"):
        await backend.log.publish(backend.subject("s", tok), b"", {})
        await backend.wait(0.002)  # distinct timestamps
    stamps = [m.ts_ns for m in [await backend.log.direct_get(name, {"seq": s}) for s in (1, 2, 3)] if m is not None]
    at = await backend.log.direct_get(name, {"start_time": _rfc3339(stamps[1])})
    assert at is not None and at.seq == 2  # the first message at or after the time
    after = await backend.log.direct_get(name, {"start_time": _rfc3339(stamps[1] + 1)})
    assert after is not None and after.seq == 3
    on_a = await backend.log.direct_get(
        name, {"start_time": _rfc3339(stamps[0] + 1), "next_by_subj": backend.subject("s", "a")}
    )
    assert on_a is not None and on_a.seq == 3
    assert await backend.log.direct_get(name, {"start_time": _rfc3339(stamps[2] + 1)}) is None
    first = await backend.log.direct_get(name, {"start_time": _rfc3339(stamps[0] - 10**9)})
    assert first is not None and first.seq == 1


async def test_direct_get_refuses_empty_and_conflicting_requests(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    err = await _api_error(backend.log.direct_get(name, {}))
    assert (err.err_code, err.description) == (0, "direct get failed: 408 Empty Request")
    err = await _api_error(backend.log.direct_get(name, {"seq": 1, "last_by_subj": backend.subject("s", "a")}))
    assert (err.err_code, err.description) == (0, "direct get failed: 408 Bad Request")
    err = await _api_error(
        backend.log.direct_get(name, {"last_by_subj": backend.subject("s", "a"), "next_by_subj": backend.subject("s")})
    )
    assert err.description == "direct get failed: 408 Bad Request"


# --- batches -------------------------------------------------------------------------------------------


async def test_batch_reads_forward_and_counts_what_is_left(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    msgs, pending = await backend.log.direct_batch(name, {"seq": 1, "batch": 2})
    assert (_seqs(msgs), pending) == ([1, 2], 3)
    assert [(m.headers["Nats-Num-Pending"], m.headers["Nats-Last-Sequence"]) for m in msgs] == [("4", "0"), ("3", "1")]
    msgs, pending = await backend.log.direct_batch(name, {"seq": 2, "batch": 10})
    assert (_seqs(msgs), pending) == ([2, 3, 4, 5], 0)
    a = backend.subject("s", "a")
    msgs, pending = await backend.log.direct_batch(name, {"seq": 2, "batch": 1, "next_by_subj": a})
    assert (_seqs(msgs), pending) == ([3], 1)
    every = backend.subject("s", "*")
    msgs, pending = await backend.log.direct_batch(name, {"seq": 1, "batch": 10, "next_by_subj": every})
    assert (_seqs(msgs), pending) == ([1, 2, 3, 4, 5], 0)
    assert await backend.log.direct_batch(name, {"seq": 6, "batch": 10}) == ([], 0)
    assert await backend.log.direct_batch(name, {"seq": 1, "batch": 10, "next_by_subj": backend.subject("s", "z")}) == (
        [],
        0,
    )


async def test_batch_steps_over_removed_messages(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    await backend.log.purge(name, subject=backend.subject("s", "b"))
    msgs, pending = await backend.log.direct_batch(name, {"seq": 2, "batch": 2})
    assert (_seqs(msgs), pending) == ([3, 4], 1)


async def test_batch_max_bytes_counts_subject_headers_and_data(backend: Backend) -> None:
    name = await backend.add()
    a = backend.subject("s", "a")
    await backend.log.publish(a, b"12345", {})
    await backend.log.publish(a, b"", {"K": "vv"})
    await backend.log.publish(a, b"x", {})
    first = len(a) + 5  # no headers: Log sends no header block (it would be stored)
    second = len(a) + len("NATS/1.0\r\nK: vv\r\n\r\n")
    for max_bytes, want in [
        (1, [1]),  # at least one message
        (first, [1]),  # stops once max_bytes is reached
        (first + 1, [1, 2]),
        (first + second, [1, 2]),
        (first + second + 1, [1, 2, 3]),
    ]:
        msgs, pending = await backend.log.direct_batch(name, {"seq": 1, "batch": 10, "max_bytes": max_bytes})
        assert (_seqs(msgs), pending) == (want, 3 - len(want)), max_bytes


async def test_batch_from_a_start_time(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend, subjects=("a",))
    await backend.wait(0.002)
    one = await backend.log.direct_get(name, {"seq": 1})
    assert one is not None
    await _fill(backend, subjects=("b", "a"))
    msgs, pending = await backend.log.direct_batch(name, {"start_time": _rfc3339(one.ts_ns + 1), "batch": 5})
    assert (_seqs(msgs), pending) == ([2, 3], 0)


async def test_multi_last_reads_the_last_message_of_each_subject(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)  # a1 b2 a3 c4 a5
    s = backend.subject
    msgs, pending = await backend.log.direct_batch(name, {"multi_last": [s("s", "a"), s("s", "b"), s("s", "none")]})
    assert (_seqs(msgs), pending) == ([2, 5], 0)  # in sequence order; subjects without messages left out
    msgs, _ = await backend.log.direct_batch(name, {"multi_last": [s("s", "*")], "batch": 10})
    assert _seqs(msgs) == [2, 4, 5]
    msgs, pending = await backend.log.direct_batch(name, {"multi_last": [s("s", "a")], "up_to_seq": 4, "batch": 1})
    assert (_seqs(msgs), pending) == ([3], 0)  # the last at or below up_to_seq
    msgs, pending = await backend.log.direct_batch(name, {"multi_last": [s("s", ">")], "batch": 2})
    assert (_seqs(msgs), pending) == ([2, 4], 1)
    assert [(m.headers["Nats-Num-Pending"], m.headers["Nats-Last-Sequence"]) for m in msgs] == [("2", "0"), ("1", "2")]
    msgs, pending = await backend.log.direct_batch(name, {"multi_last": [s("s", "*")], "seq": 3})
    assert (_seqs(msgs), pending) == ([4, 5], 0)  # seq: none below it (still counted in the pending count)
    assert msgs[0].headers["Nats-Num-Pending"] == "1"
    assert await backend.log.direct_batch(name, {"multi_last": [s("s", "c")], "up_to_seq": 3}) == ([], 0)
    assert await backend.log.direct_batch(name, {"multi_last": [s("s", "none")]}) == ([], 0)


async def test_multi_last_refuses_more_than_1024_subjects(backend: Backend) -> None:
    name = await backend.add()
    await asyncio.gather(*(backend.log.publish(backend.subject("s", str(i)), b"", {}) for i in range(1025)))
    err = await _api_error(backend.log.direct_batch(name, {"multi_last": [backend.subject("s", "*")]}))
    assert (err.err_code, err.description) == (0, "direct get failed: 413 Too Many Results")
    msgs, _ = await backend.log.direct_batch(name, {"multi_last": [backend.subject("s", "1")]})
    assert _seqs(msgs) == [2]


# --- STREAM.MSG.GET ------------------------------------------------------------------------------------


async def test_leader_get(backend: Backend) -> None:
    name = await backend.add()
    await backend.log.publish(backend.subject("s", "a"), b"1", {"Esdb-Version": "0"})
    await _fill(backend, subjects=("b", "a"))
    m = await backend.log.leader_get(name, {"seq": 1})
    assert m is not None and (m.seq, m.subject, m.data) == (1, backend.subject("s", "a"), b"1")
    assert m.headers == {"Esdb-Version": "0"}  # the published headers only
    m = await backend.log.leader_get(name, {"last_by_subj": backend.subject("s", "a")})
    assert m is not None and m.seq == 3 and m.headers == {}
    m = await backend.log.leader_get(name, {"seq": 2, "next_by_subj": backend.subject("s", "a")})
    assert m is not None and m.seq == 3
    assert await backend.log.leader_get(name, {"seq": 9}) is None
    assert await backend.log.leader_get(name, {"last_by_subj": backend.subject("s", "none")}) is None
    direct = await backend.log.direct_get(name, {"seq": 2})
    led = await backend.log.leader_get(name, {"seq": 2})
    assert direct is not None and led is not None and led.ts_ns == direct.ts_ns
    m = await backend.log.leader_get(name, {"start_time": _rfc3339(direct.ts_ns)})
    assert m is not None and m.seq == 2
    for bad in ({}, {"seq": 1, "last_by_subj": backend.subject("s", "a")}):
        err = await _api_error(backend.log.leader_get(name, bad))  # type: ignore[arg-type]
        assert (err.err_code, err.js_status, err.description) == (ERR_BAD_REQUEST, 400, "bad request")


# --- purge ---------------------------------------------------------------------------------------------


async def test_purge_a_subject(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    assert await backend.log.purge(name, subject=backend.subject("s", "a")) == 3
    st = (await backend.log.stream_info(name))["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"], st["num_subjects"]) == (2, 2, 5, 2)
    # the subject has no message now: the next write on it expects 0
    ack = await backend.log.publish(backend.subject("s", "a"), b"", {H_EXPECTED_LAST_SUBJECT_SEQ: "0"})
    assert ack.seq == 6


async def test_purge_below_a_sequence_and_keep(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)  # a1 b2 a3 c4 a5
    assert await backend.log.purge(name, subject=backend.subject("s", "a"), seq=5) == 2
    assert _seqs((await backend.log.direct_batch(name, {"seq": 1, "batch": 9}))[0]) == [2, 4, 5]
    assert await backend.log.purge(name, seq=1) == 0  # "below 1" is nothing
    assert await backend.log.purge(name, keep=2) == 1
    assert _seqs((await backend.log.direct_batch(name, {"seq": 1, "batch": 9}))[0]) == [4, 5]
    assert await backend.log.purge(name, subject=backend.subject("s", "*"), keep=5) == 0
    err = await _api_error(backend.log.purge(name, seq=3, keep=1))
    assert (err.err_code, err.js_status) == (ERR_BAD_REQUEST, 400)
    assert await backend.log.purge(name, seq=5) == 1  # no filter: everything below 5
    assert _seqs((await backend.log.direct_batch(name, {"seq": 1, "batch": 9}))[0]) == [5]


async def test_purge_keep_counts_every_subject_of_the_filter(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)  # a1 b2 a3 c4 a5
    assert await backend.log.purge(name, subject=backend.subject("s", "*"), keep=2) == 3
    assert _seqs((await backend.log.direct_batch(name, {"seq": 1, "batch": 9}))[0]) == [4, 5]


async def test_purge_everything(backend: Backend) -> None:
    name = await backend.add()
    await _fill(backend)
    assert await backend.log.purge(name) == 5
    st = (await backend.log.stream_info(name))["state"]
    assert (st["messages"], st["first_seq"], st["last_seq"], st.get("num_subjects")) == (0, 6, 5, None)
    assert (await backend.log.publish(backend.subject("s", "a"), b"", {})).seq == 6  # sequences go on
