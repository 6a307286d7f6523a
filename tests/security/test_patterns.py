"""Attack: one client-supplied regex freezes everything (issue 10, item 5; ADR 0017).

Before: a schema with ``"pattern": "^(a+)+$"`` made an append of ``"a"*25+"!"`` take a second
(doubling per character) in Python's backtracking ``re``, and every other request of the
service waited with it; link filters with ``matches`` compiled client regexes the same way.
Now every client pattern runs in RE2 (linear time) or is refused at registration.

Timing: the only bounds below are hang guards (generous; a backtracking engine needs years for
these inputs, RE2 microseconds), never a measure of speed.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from esdb_gater.services.stream import handlers as stream_handlers
from esdb_gater.shared.core.patterns import run_matching
from tests.conftest import Wire

EVIL = "^(a+)+$"
HANG_GUARD_S = 2.0


def _schema(**props: Any) -> dict[str, Any]:
    return {"version": 1, "json_schema": {"type": "object", "properties": props}}


async def _version_elsewhere(wire: Wire) -> float:
    """A request to another store: how long it took (it must answer at all)."""
    other = "t" + uuid.uuid4().hex[:12]
    started = time.monotonic()
    reply = await wire.call(other, "version", {"stream_id": "x"}, wait=10)
    reply.ok()
    return time.monotonic() - started


async def test_hostile_schema_pattern_answers_and_other_stores_keep_answering(wire: Wire, store: str) -> None:
    reg = await wire.call(
        store,
        "register",
        {"event_type": "Evil", "schema": _schema(name={"type": "string", "pattern": EVIL})},
        service="schema",
    )
    reg.ok()

    async def append(value: str) -> Any:
        ev = {"event_type": "Evil", "data": {"name": value}}
        return await wire.call(store, "append", {"stream_id": "s", "expected_version": -2, "events": [ev]}, wait=20)

    # the textbook input (2^25 steps in a backtracking engine) and far longer ones, with a
    # request to another store in flight at the same time
    hostile = [append("a" * 25 + "!"), append("a" * 100_000 + "!"), append("a" * 1_000_000 + "!")]
    results = await asyncio.gather(*hostile, _version_elsewhere(wire), _version_elsewhere(wire))
    for reply in results[:3]:
        details = reply.error("invalid_request")
        assert details["field"] == "events.0.data.name", details
        assert "does not match" in details["reason"]
    assert max(results[3:]) < HANG_GUARD_S, results[3:]
    # and a value that matches is stored
    ok = (await append("a" * 100_000)).ok()
    assert ok["version"] == 0


async def test_hostile_pattern_properties_and_additional_properties(wire: Wire, store: str) -> None:
    schema = {
        "version": 1,
        "json_schema": {
            "type": "object",
            "patternProperties": {EVIL: {"type": "integer"}},
            "additionalProperties": False,
        },
    }
    (await wire.call(store, "register", {"event_type": "Keys", "schema": schema}, service="schema")).ok()
    ev = {"event_type": "Keys", "data": {"a" * 30 + "!": 1}}
    started = time.monotonic()
    reply = await wire.call(store, "append", {"stream_id": "s", "expected_version": -2, "events": [ev]}, wait=10)
    assert time.monotonic() - started < HANG_GUARD_S
    assert "not match any of the regexes" in reply.error("invalid_request")["reason"]
    good = {"event_type": "Keys", "data": {"a" * 30: 1}}
    (await wire.call(store, "append", {"stream_id": "s", "expected_version": -2, "events": [good]})).ok()


REFUSED = [
    ("backreference", {"type": "string", "pattern": r"^(a)\1$"}, "schema.json_schema.properties.p.pattern"),
    ("lookahead", {"type": "string", "pattern": "^(?=a)a$"}, "schema.json_schema.properties.p.pattern"),
    ("lookbehind", {"type": "string", "pattern": "(?<=a)b"}, "schema.json_schema.properties.p.pattern"),
    ("too-long", {"type": "string", "pattern": "a" * 1025}, "schema.json_schema.properties.p.pattern"),
    ("huge-program", {"type": "string", "pattern": r"\pL{1,200}"}, "schema.json_schema.properties.p.pattern"),
    (
        "nested-pattern-properties",
        {"type": "object", "patternProperties": {r"(x)\1": {}}},
        "schema.json_schema.properties.p.patternProperties",
    ),
]


@pytest.mark.parametrize(("prop", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_patterns_re2_cannot_run_are_refused_at_registration(
    wire: Wire, store: str, prop: dict[str, Any], field: str
) -> None:
    reply = await wire.call(store, "register", {"event_type": "P", "schema": _schema(p=prop)}, service="schema")
    details = reply.error("invalid_request")
    assert details["field"].startswith(field), details
    assert details["reason"]
    (await wire.call(store, "get", {"event_type": "P"}, service="schema")).error("not_found")


async def test_re2_syntax_is_the_syntax(wire: Wire, store: str) -> None:
    """``\\pL`` is RE2 (and ECMA-262 with ``u``) but not Python ``re``: accepted and applied."""
    schema = _schema(name={"type": "string", "pattern": r"^\pL+$"})
    (await wire.call(store, "register", {"event_type": "Name", "schema": schema}, service="schema")).ok()

    async def append(value: str) -> Any:
        ev = {"event_type": "Name", "data": {"name": value}}
        return await wire.call(store, "append", {"stream_id": "n", "expected_version": -2, "events": [ev]})

    (await append("Zoë")).ok()
    (await append("Zoë 2")).error("invalid_request")


async def test_link_matches_runs_in_linear_time_or_is_refused(wire: Wire, store: str) -> None:
    bad = {"name": "bad", "source": {"type": "all"}, "filter": {"field": "data.s", "op": "matches", "value": r"(a)\1"}}
    details = (await wire.call(store, "create", bad, service="link")).error("invalid_request")
    assert "RE2" in str(details) or "pattern" in str(details), details

    link = {"name": "evil", "source": {"type": "all"}, "filter": {"field": "data.s", "op": "matches", "value": EVIL}}
    (await wire.call(store, "create", link, service="link")).ok()
    (await wire.call(store, "start", {"name": "evil"}, service="link")).ok()
    events = [
        {"event_type": "T", "data": {"s": "a" * 25 + "!"}},
        {"event_type": "T", "data": {"s": "a" * 200_000 + "!"}},
        {"event_type": "T", "data": {"s": "aaa"}},
    ]
    (await wire.call(store, "append", {"stream_id": "src", "expected_version": -2, "events": events})).ok()
    # the link service keeps answering while its driver filters the hostile values
    started = time.monotonic()
    (await wire.call(store, "info", {"name": "evil"}, service="link", wait=10)).ok()
    assert time.monotonic() - started < HANG_GUARD_S
    assert await _version_elsewhere(wire) < HANG_GUARD_S
    deadline = time.monotonic() + 15
    got: list[Any] = []
    while time.monotonic() < deadline:
        reply = await wire.call(store, "forward", {"stream_id": "$link:evil", "start_version": 0, "count": 10})
        if not reply.is_error:
            got = reply.ok()["events"]
            if got:
                break
        await asyncio.sleep(0.1)
    assert [e["data"]["s"] for e in got] == ["aaa"]


async def test_link_stream_pattern_with_many_stars(wire: Wire, store: str) -> None:
    """``*a*a*a…`` became ``.*a.*a.*a…`` in Python ``re``: polynomial backtracking per stream id.
    It is an RE2 regex now."""
    pattern = "*" + "a*" * 100 + "c"
    link = {"name": "stars", "source": {"type": "stream_pattern", "pattern": pattern}}
    (await wire.call(store, "create", link, service="link")).ok()
    (await wire.call(store, "start", {"name": "stars"}, service="link")).ok()
    ev = [{"event_type": "T", "data": {}}]
    (await wire.call(store, "append", {"stream_id": "a" * 200, "expected_version": -2, "events": ev})).ok()
    (await wire.call(store, "append", {"stream_id": "a" * 100 + "c", "expected_version": -2, "events": ev})).ok()
    assert await _version_elsewhere(wire) < HANG_GUARD_S
    deadline = time.monotonic() + 15
    got: list[Any] = []
    while time.monotonic() < deadline and not got:
        reply = await wire.call(store, "forward", {"stream_id": "$link:stars", "start_version": 0, "count": 10})
        got = [] if reply.is_error else reply.ok()["events"]
        await asyncio.sleep(0.05)
    assert [e["metadata"]["source_stream"] for e in got] == ["a" * 100 + "c"]


async def test_the_slowest_linear_case_runs_off_the_event_loop(
    wire: Wire, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RE2's worst case (a DFA too big for its memory budget, so the NFA runs: time ∝ text x
    program) is seconds for a few MB. It runs on a worker thread: the service keeps answering."""
    pattern = "[ab]*a[ab]{300}c"  # 2^300 DFA states: RE2 falls back to its NFA
    schema = _schema(s={"type": "string", "pattern": pattern})
    (await wire.call(store, "register", {"event_type": "Slow", "schema": schema}, service="schema")).ok()
    text = "".join(random.Random(1).choices("ab", k=3_000_000))  # seconds of NFA work
    ev = {"event_type": "Slow", "data": {"s": text}}
    handed_off = asyncio.Event()  # the stream service has handed the validation to a worker thread

    async def signalling(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        handed_off.set()
        return await run_matching(fn, *args, **kwargs)

    monkeypatch.setattr(stream_handlers, "run_matching", signalling)
    started = time.monotonic()
    slow = asyncio.create_task(
        wire.call(store, "append", {"stream_id": "s", "expected_version": -2, "events": [ev]}, wait=60)
    )
    await asyncio.wait_for(handed_off.wait(), 30)
    await _version_elsewhere(wire)
    # this test shares the services' event loop: had the validation run on it, this request
    # would have been answered only after the seconds of matching
    elapsed = time.monotonic() - started
    still_validating = not slow.done()
    reply = await slow
    assert reply.error("invalid_request")["field"] == "events.0.data.s"
    assert still_validating and elapsed < HANG_GUARD_S, elapsed
