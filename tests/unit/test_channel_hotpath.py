"""The channel publish path's faster pieces give what the slower ones gave (issue 11): the canonical
JSON and HMAC of signing.py (byte for byte, same errors), the one-regex topic check, the dispatcher's
slots (a publish runs at once when a slot is free, never more than ``workers`` at a time), the
shared publish reply, and rate counters whose concurrent increments are batched (exact places)."""

from __future__ import annotations

import asyncio
import base64
import decimal
import functools
import hashlib
import hmac
import math
import random
import re
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from esdb_gater.services.channel import handlers
from esdb_gater.services.channel.dispatch import Dispatcher
from esdb_gater.services.channel.policy import Priority
from esdb_gater.services.channel.store import ChannelStore
from esdb_gater.shared.core.errors import InvalidSignatureError, UnavailableError
from esdb_gater.shared.core.settings import ChannelsSettings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.models.channel import PublishRequest, PublishResponse, SubscribeRequest
from esdb_gater.shared.security import signing

# --- the reference: signing.py's encoder before issue 11, kept verbatim as the oracle -------------


def _ref_number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("NaN and infinities cannot be encoded")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exp = decimal.Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exp, int)
    k = len(digits)
    n = exp + len(digit_tuple)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits if k == 1 else digits[0] + "." + digits[1:]
        out = f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + out


_REF_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _ref_string(value: str) -> str:
    out = ['"']
    for ch in value:
        esc = _REF_ESC.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _ref_encode(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise ValueError("nesting deeper than 64 levels")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_ref_number(value))
    elif isinstance(value, str):
        out.append(_ref_string(value))
    elif isinstance(value, Mapping):
        out.append("{")
        keys = list(value)
        if not all(isinstance(k, str) for k in keys):
            raise ValueError("object keys must be strings")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_ref_string(key))
            out.append(":")
            _ref_encode(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _ref_encode(item, out, depth + 1)
        out.append("]")
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")


def _ref_canonical(value: Any) -> bytes:
    out: list[str] = []
    _ref_encode(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


def _ref_signature(message: Mapping[str, Any], secret: bytes) -> str:
    body = {k: v for k, v in message.items() if k != "signature"}
    return base64.b64encode(hmac.new(secret, _ref_canonical(body), hashlib.sha256).digest()).decode("ascii")


# characters that exercise every escape, the UTF-16 key order (U+E000.. vs astral) and raw UTF-8
_CHARS = ['"', "\\", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", " ", "a", "Z", "0", "é", "\u2028"]
_CHARS += ["\ue000", "\uffff", "😀", "\U00010000", "/", "<"]


def _text(rnd: random.Random) -> str:
    return "".join(rnd.choice(_CHARS) for _ in range(rnd.randint(0, 6)))


def _value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randint(0, 9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 7, 2**53 + 1, -(2**63), 2**64 - 1, rnd.randint(-(10**12), 10**12)])
    if kind == 3:
        return rnd.choice([0.0, -0.0, 1.0, 0.1, 1e21, 1e-7, 123.456, 5e-324, -2.5, rnd.uniform(-1e30, 1e30)])
    if kind in (4, 5, 6):
        return _text(rnd)
    if kind in (7, 8):
        return {_text(rnd): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 5))}
    items = [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return tuple(items) if rnd.random() < 0.2 else items


def test_canonical_json_is_byte_for_byte_the_reference_encoders() -> None:
    rnd = random.Random(11)
    for _ in range(3000):
        value = _value(rnd)
        assert signing.canonical_json(value) == _ref_canonical(value), value


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        {"a": [1, math.inf]},
        {1: "x"},
        {"a": {"b": 1, 2: 3}},
        b"bytes",
        {"s": {1, 2}},
        "\ud800",
        {"\udc00": 1},
        ["ok", object()],
    ],
)
def test_canonical_json_refuses_with_the_reference_encoders_error(value: Any) -> None:
    with pytest.raises(ValueError) as ours:
        signing.canonical_json(value)
    with pytest.raises(ValueError) as ref:
        _ref_canonical(value)
    assert str(ours.value) == str(ref.value)


def test_canonical_json_nesting_limit_is_the_reference_encoders() -> None:
    for depth in (64, 65):
        value: Any = 1
        for _ in range(depth):
            value = {"k": value} if depth % 2 else [value]
        if depth == 64:
            assert signing.canonical_json(value) == _ref_canonical(value)
        else:
            with pytest.raises(ValueError, match="nesting"):
                signing.canonical_json(value)


def test_subclasses_and_mappings_encode_as_before() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Ordered(dict[str, Any]):
        pass

    value = [Text("x\n"), Number(5), Ordered(b=1, a=2), {"m": (1, 2)}, 2.0, True]
    assert signing.canonical_json(value) == _ref_canonical(value) == b'["x\\n",5,{"a":2,"b":1},{"m":[1,2]},2,true]'


GOLDEN_MESSAGE = {
    "id": "golden-1",
    "value": 42,
    "text": "h\u00e9llo \U0001f600\n",
    "nested": {"b": [1, 2.5, None, True], "a": "x"},
    "signed_at": 1700000000,
}


def test_signature_golden_bytes() -> None:
    """Computed with the encoder and hmac.new of before issue 11."""
    expected = "02JKiKaVpIvEFiF6PcePPDNcP4bETqxt9OcAaBSziTc="
    assert signing.signature_of(GOLDEN_MESSAGE, "bench-channel-secret") == expected
    assert signing.canonical_json(GOLDEN_MESSAGE) == (
        b'{"id":"golden-1","nested":{"a":"x","b":[1,2.5,null,true]},"signed_at":1700000000,'
        b'"text":"h\xc3\xa9llo \xf0\x9f\x98\x80\\n","value":42}'
    )


def test_signatures_match_the_reference_for_many_messages_and_secrets() -> None:
    rnd = random.Random(7)
    secrets = [b"k", b"bench-channel-secret", bytes(range(256)), b"x" * 200]  # short, long (> block size)
    for i in range(500):
        message = {"n": i, "v": _value(rnd), "signed_at": 1700000000 + i, "signature": "ignored"}
        secret = secrets[i % len(secrets)]
        assert signing.signature_of(message, secret) == _ref_signature(message, secret)
        assert signing.signature_of(message, secret.decode("latin-1").encode("latin-1")) == _ref_signature(
            message, secret
        )


def test_the_keyed_hmac_cache_keeps_secrets_apart_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "_keyed_cache", {})
    message = {"a": 1, "signed_at": 1}
    sigs = {signing.signature_of(message, f"secret-{i}") for i in range(3 * signing._KEYED_MAX)}
    assert len(sigs) == 3 * signing._KEYED_MAX  # every secret its own MAC
    assert len(signing._keyed_cache) <= signing._KEYED_MAX
    again = signing.signature_of(message, "secret-0")
    assert again == _ref_signature(message, b"secret-0")
    signed = signing.sign({"a": 1}, "secret-1", now=1)
    signing.verify(signed, "secret-1", now=1)
    with pytest.raises(InvalidSignatureError):
        signing.verify(signed, "secret-2", now=1)


# --- topics: one regex for the common case, the token loop for the error --------------------------

_TOKEN = re.compile(r"\A[A-Za-z0-9_:=+@~-]{1,64}\Z")


def _ref_topic_ok(value: str, wildcards: bool) -> bool:
    if not value or len(value) > 255:
        return False
    tokens = value.split(".")
    if len(tokens) > 16:
        return False
    for i, tok in enumerate(tokens):
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if not _TOKEN.match(tok):
            return False
    return True


def test_topic_checks_accept_and_refuse_what_the_token_loop_does() -> None:
    rnd = random.Random(3)
    alphabet = ["a", "Z", "0", "_", ":", "=", "+", "@", "~", "-", ".", "*", ">", " ", "ä", "\n", "x" * 63]
    samples = ["x" * 64, "x" * 65, ".".join(["t"] * 16), ".".join(["t"] * 17), ".".join(["x" * 64] * 4)]
    samples += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(4000)]
    for topic in samples:
        try:
            PublishRequest(channel="events", topic=topic, message=1)
            published = True
        except ValidationError:
            published = False
        assert published == _ref_topic_ok(topic, wildcards=False), topic
        try:
            SubscribeRequest(channel="events", topic=topic, deliver_to="_INBOX.x")
            subscribed = True
        except ValidationError:
            subscribed = False
        assert subscribed == _ref_topic_ok(topic, wildcards=True), topic


def test_a_bad_topic_still_names_its_bad_token() -> None:
    with pytest.raises(ValidationError, match=r"topic token 'b c' must match"):
        PublishRequest(channel="events", topic="a.b c", message=1)
    with pytest.raises(ValidationError, match="more than 16 tokens"):
        PublishRequest(channel="events", topic=".".join(["t"] * 17), message=1)


# --- the publish reply ----------------------------------------------------------------------------


def test_publish_reply_wire_form_is_model_dumps() -> None:
    for reply in (PublishResponse(), PublishResponse(seq=7), handlers._PUBLISHED):
        assert reply.to_wire() == reply.model_dump(mode="python")
    with pytest.raises(ValidationError):
        handlers._PUBLISHED.seq = 5  # type: ignore[misc]  # shared by every publish: frozen


# --- the dispatcher's slots -----------------------------------------------------------------------


def _dispatcher(workers: int) -> Dispatcher:
    return Dispatcher(
        workers=workers,
        max_queue=100,
        shed_at={"low": 0.25, "normal": 0.5, "high": 1.0},
        weights={"critical": 8, "high": 4, "normal": 2, "low": 1},
        max_wait_s=5.0,
    )


async def test_a_free_slot_runs_the_work_at_once_in_the_publishers_task() -> None:
    d = _dispatcher(2)
    await d.start()
    ran_in: list[asyncio.Task[Any] | None] = []

    async def work() -> int:
        ran_in.append(asyncio.current_task())
        return 5

    async def publisher() -> tuple[int, asyncio.Task[Any] | None]:
        return await d.submit("normal", work), asyncio.current_task()

    result, task = await publisher()
    assert result == 5 and ran_in == [task] and d.queued() == 0
    assert d.processed["normal"] == 1 and d._free == 2
    await d.stop()


async def test_never_more_than_workers_at_once_and_the_rest_queue_by_priority() -> None:
    d = _dispatcher(2)
    await d.start()
    gate = asyncio.Event()
    running = 0
    peak = 0
    order: list[str] = []

    async def work(name: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(name)
        await gate.wait()
        running -= 1
        return name

    plan: list[tuple[Priority, str]] = [
        ("low", "low-0"),
        ("low", "low-1"),
        ("low", "low-2"),
        ("critical", "critical-0"),
        ("normal", "normal-0"),
    ]
    names = [name for _, name in plan]
    jobs = [asyncio.ensure_future(d.submit(p, functools.partial(work, name))) for p, name in plan]
    await asyncio.sleep(0)
    assert running == 2 and d.queued() == 3 and d._free == 0
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*jobs), 5) == names
    assert peak == 2 and d._free == 2 and d.queued() == 0
    assert order[:2] == ["low-0", "low-1"] and order[2:] == ["critical-0", "normal-0", "low-2"]
    await d.stop()


async def test_cancelled_publishers_do_not_keep_slots() -> None:
    d = _dispatcher(1)
    await d.start()
    gate = asyncio.Event()

    async def blocked() -> int:
        await gate.wait()
        return 1

    async def quick() -> int:
        return 2

    first = asyncio.ensure_future(d.submit("high", blocked))
    waiting = asyncio.ensure_future(d.submit("high", quick))
    await asyncio.sleep(0)
    assert d._free == 0 and d.queued() == 1
    waiting.cancel()  # gave up while queued
    first.cancel()  # gave up while running: its slot comes back
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert d._free == 1
    assert await asyncio.wait_for(d.submit("high", quick), 5) == 2  # the slot is usable again
    await d.stop()


async def test_a_slot_handed_over_as_the_publisher_is_cancelled_is_passed_on() -> None:
    d = _dispatcher(1)
    await d.start()

    async def quick() -> int:
        return 2

    d._free -= 1  # the one slot is busy (a job in progress)
    second = asyncio.ensure_future(d.submit("high", quick))
    third = asyncio.ensure_future(d.submit("high", quick))
    await asyncio.sleep(0)
    assert d.queued() == 2
    d._release()  # the busy job ends: its slot goes to ``second``, whose task has not run yet ...
    second.cancel()  # ... and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await asyncio.wait_for(third, 5) == 2  # the slot went on to the next job
    assert d._free == 1 and d.queued() == 0
    await d.stop()


async def test_nothing_runs_before_start_or_after_stop() -> None:
    d = _dispatcher(1)

    async def quick() -> int:
        return 2

    early = asyncio.ensure_future(d.submit("normal", quick))
    await asyncio.sleep(0)
    assert not early.done() and d.queued() == 1
    await d.start()
    assert await asyncio.wait_for(early, 5) == 2
    await d.stop()
    late = asyncio.ensure_future(d.submit("normal", quick))
    await asyncio.sleep(0)
    assert not late.done() and d.queued() == 1
    late.cancel()


async def test_errors_reach_the_publisher_and_free_the_slot() -> None:
    d = _dispatcher(1)
    await d.start()

    async def boom() -> None:
        raise UnavailableError("jetstream down")

    for _ in range(3):
        with pytest.raises(UnavailableError, match="jetstream down"):
            await d.submit("low", boom)
    assert d._free == 1 and d.processed["low"] == 3
    await d.stop()


# --- shared rate counters: concurrent messages share an increment, places stay exact --------------


class _CounterLog:
    """JetStream's counter streams as far as ``ChannelStore.allow`` uses them: ``Nats-Incr`` adds
    to the subject's value and the ack carries the new total; every call takes a loop turn or two."""

    def __init__(self, fail: int = 0) -> None:
        self.values: dict[str, int] = {}
        self.increments: list[int] = []
        self.fail = fail  # the next ``fail`` calls raise

    async def publish_ack(self, subject: str, payload: bytes, headers: dict[str, str]) -> dict[str, Any]:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise UnavailableError("JetStream did not answer (no responders)")
        n = int(headers["Nats-Incr"])
        self.increments.append(n)
        self.values[subject] = self.values.get(subject, 0) + n
        return {"stream": "esdb-chrate", "seq": len(self.increments), "val": str(self.values[subject])}


def _store(log: _CounterLog) -> ChannelStore:
    store = ChannelStore(_NoNats(), log, Subjects("esdb"), ChannelsSettings())  # type: ignore[arg-type]
    store.clock = lambda: 1_700_000_000.5  # one second that does not end
    return store


class _NoNats:
    def jetstream(self) -> None:
        return None


async def test_concurrent_messages_share_increments_and_exactly_the_limit_passes() -> None:
    log = _CounterLog()
    a, b = _store(log), _store(log)  # two instances, one counter
    results = await asyncio.gather(*(s.allow("metrics", "t", 30) for s in [a, b] * 40))
    assert sum(results) == 30
    # each instance counts at most ``limit`` of its own 40 on the shared counter, each once
    assert sum(log.increments) == 60
    assert len(log.increments) < 60 and max(log.increments) > 1  # fewer round trips than messages
    assert not a._rate_flight and not a._rate_open and not b._rate_flight and not b._rate_open
    assert await a.allow("metrics", "other", 30)  # per topic


async def test_a_lone_message_is_one_plus_one() -> None:
    log = _CounterLog()
    store = _store(log)
    for _ in range(5):
        assert await store.allow("health", "t", 3) in (True, False)
    assert log.increments == [1, 1, 1]  # sequential: no batching; past the limit no round trip


async def test_an_error_reaches_every_message_of_its_batch_and_the_next_batch_goes_on() -> None:
    log = _CounterLog(fail=1)  # the first (alone) fails; the batch behind it goes through
    store = _store(log)
    results = await asyncio.gather(*(store.allow("metrics", "t", 100) for _ in range(10)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, UnavailableError)]
    assert failed and len(failed) < 10 and all(r is True for r in results if not isinstance(r, BaseException))
    assert sum(log.increments) == 10 - len(failed)  # failed increments were not counted
    assert await store.allow("metrics", "t", 100)
    assert not store._rate_flight and not store._rate_open
