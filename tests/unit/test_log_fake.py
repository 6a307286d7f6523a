"""shared/log/fake.py beyond the contract suite (tests/contract/): subject matching, its clock, and
the refusals of what it does not model (a test relying on those gets NotImplementedError, not a
wrong answer)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from esdb_gater.shared.log.fake import FakeClock, FakeLog, subject_matches, subjects_collide


@pytest.mark.parametrize(
    ("filter_", "subject", "match"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b.>", "x.b.y", True),
        ("a.b", "a.c", False),
        (">", "a", True),
    ],
)
def test_subject_matching(filter_: str, subject: str, match: bool) -> None:
    assert subject_matches(filter_, subject) is match


@pytest.mark.parametrize(
    ("a", "b", "collide"),
    [("a.>", "a.b", True), ("a.*", "*.b", True), ("a.>", "a", False), ("a.b", "a.c", False), ("a.*.c", "a.>", True)],
)
def test_subjects_collide(a: str, b: str, collide: bool) -> None:
    assert subjects_collide(a, b) is collide and subjects_collide(b, a) is collide


async def test_timestamps_come_from_the_clock() -> None:
    now = [1_000_000_000_000_000_000]
    log = FakeLog(clock=lambda: now[0])
    await log.add_stream({"name": "S", "subjects": ["s.>"], "allow_direct": True})
    await log.publish("s.a", b"", {})
    now[0] += 60_500_000_000
    await log.publish("s.a", b"", {})
    msgs, _ = await log.direct_batch("S", {"seq": 1, "batch": 2})
    assert [m.ts_ns for m in msgs] == [1_000_000_000_000_000_000, 1_000_000_060_500_000_000]
    # Go's RFC3339Nano, as the server writes it: no trailing zeros, no fraction when it is zero
    assert [m.headers["Nats-Time-Stamp"] for m in msgs] == ["2001-09-09T01:46:40Z", "2001-09-09T01:47:40.5Z"]
    clock = FakeClock(start_ns=0)
    clock.advance(1.5)
    t0 = clock()
    assert t0 >= 1_500_000_000 and t0 < 2_500_000_000  # from start_ns on, in real time, plus what advance adds


@pytest.mark.parametrize(
    "option",
    [
        {"max_bytes": 1024},
        {"retention": "interest"},
        {"sources": [{"name": "X"}]},
        {"max_msg_size": 10},
        {"discard": "new", "max_msgs": 10},
        {"deny_purge": True},
    ],
)
async def test_stream_options_it_does_not_model_are_refused(option: dict[str, Any]) -> None:
    with pytest.raises(NotImplementedError):
        await FakeLog().add_stream({"name": "S", "subjects": ["s.>"], **option})


@pytest.mark.parametrize("header", ["Nats-Rollup", "Nats-Expected-Stream", "Nats-TTL", "Nats-Incr"])
async def test_publish_headers_it_does_not_model_are_refused(header: str) -> None:
    log = FakeLog()
    await log.add_stream({"name": "S", "subjects": ["s.>"]})
    with pytest.raises(NotImplementedError):
        await log.publish("s.a", b"", {header: "x"})


async def test_requests_it_does_not_model_are_refused() -> None:
    log = FakeLog()
    await log.add_stream({"name": "S", "subjects": ["s.>"], "allow_direct": True})
    await log.publish("s.a", b"", {})
    with pytest.raises(NotImplementedError):
        await log.direct_get("S", {"start_time": "2026-01-01T00:00:00+01:00"})  # only UTC "Z" times
    with pytest.raises(NotImplementedError):
        await log.direct_batch("S", {"seq": 1, "batch": 1, "up_to_time": "x"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValueError, match="batch"):  # the server would never end such a batch
        await log.direct_batch("S", {"seq": 1})


async def test_the_fake_is_fast() -> None:
    """3 000 publishes with expectations and message ids, and their reads: a small fraction of a second."""
    log = FakeLog()
    await log.add_stream({"name": "S", "subjects": ["s.>"], "allow_direct": True})
    began = time.perf_counter()
    for i in range(3_000):
        subject = f"s.{i % 100}"
        last = await log.direct_get("S", {"last_by_subj": subject})
        expected = str(last.seq if last is not None else 0)
        await log.publish(subject, b"x", {"Nats-Expected-Last-Subject-Sequence": expected, "Nats-Msg-Id": str(i)})
    msgs, pending = await log.direct_batch("S", {"seq": 1, "batch": 1000, "next_by_subj": "s.7"})
    assert (len(msgs), pending) == (30, 0)
    assert time.perf_counter() - began < 1.0
