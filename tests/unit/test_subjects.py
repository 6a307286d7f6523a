"""Subject builders and the stream-id → subject-token mapping (SPEC.md §2, §3).

The token mapping is what keeps one stream from reading or writing another's events, so it is
fuzzed: round trip, injectivity, and no subject-syntax characters in any token."""

from __future__ import annotations

import random
import re

import pytest

from esdb_gater.shared.core.subjects import (
    MAX_STREAM_ID_BYTES,
    PREFIX_RE,
    STORE_RE,
    Subjects,
    decode_token,
    encode_token,
)

TOKEN_RE = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$")
FORBIDDEN = frozenset(".*> \t\r\n\x0b\x0c")

HOSTILE = [
    "a.b",
    "a%2Eb",
    "a%2eb",
    "a",
    "a.*",
    "a.>",
    "*",
    ">",
    ".",
    "..",
    "a..b",
    "a b",
    " a",
    "a ",
    "\t",
    "a\nb",
    "$a",
    "a$",
    "$SYS.x",
    "%",
    "%%",
    "%25",
    "%2",
    "%zz",
    "ünïcødé",
    "日本語",
    "🎉",
    "a\x00b",
    "\u200b",
    "x" * MAX_STREAM_ID_BYTES,
    "é" * (MAX_STREAM_ID_BYTES // 2),
    "🎉" * (MAX_STREAM_ID_BYTES // 4),
    "A",
    "a-b",
    "a_b",
    "_",
    "-",
    "orders-42",
]


def _check_token(value: str) -> str:
    token = encode_token(value)
    assert TOKEN_RE.match(token), (value, token)
    assert not (set(token) & FORBIDDEN), (value, token)
    assert decode_token(token) == value
    return token


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:40] for v in HOSTILE])
def test_encode_token_round_trips_hostile_ids(value: str) -> None:
    _check_token(value)


def test_encode_token_is_injective_on_hostile_ids() -> None:
    tokens = [_check_token(v) for v in HOSTILE]
    assert len(set(tokens)) == len(set(HOSTILE))


@pytest.mark.parametrize("value", ["orders-42", "order_1", "ABCxyz019", "a", "-", "_", "user-" + "9" * 200])
def test_encode_token_keeps_plain_ids_readable(value: str) -> None:
    assert encode_token(value) == value
    assert decode_token(value) == value


def test_encode_token_escapes_dot_and_percent() -> None:
    assert encode_token("a.b") == "a%2Eb"
    assert encode_token("a%2Eb") == "a%252Eb"
    assert encode_token("a b") == "a%20b"
    assert encode_token("é") == "%C3%A9"


def test_encode_token_distinguishes_look_alikes() -> None:
    look_alikes = ["a.b", "a%2Eb", "a", "a.*", "a.>", "a%2E%2A", "a.b.c", "a%2Eb%2Ec", "a.b%2Ec"]
    tokens = {encode_token(v) for v in look_alikes}
    assert len(tokens) == len(look_alikes)


def _random_id(rng: random.Random) -> str:
    """A random stream id of up to 256 UTF-8 bytes, biased towards subject-syntax characters."""
    pools = [
        "abcXYZ019-_",
        ".*>$% \t\n",
        "%2E%2A%25",
        "".join(chr(c) for c in range(0x20, 0x7F)),
        "üéñ日本語🎉\u200b\x00\x7f\u0080\uffff",
    ]
    out: list[str] = []
    size = 0
    for _ in range(rng.randint(1, 80)):
        kind = rng.random()
        if kind < 0.1:
            # any code point except surrogates
            cp = rng.randint(0, 0x10FFFF)
            while 0xD800 <= cp <= 0xDFFF:
                cp = rng.randint(0, 0x10FFFF)
            ch = chr(cp)
        else:
            ch = rng.choice(rng.choice(pools))
        n = len(ch.encode("utf-8"))
        if size + n > MAX_STREAM_ID_BYTES:
            break
        out.append(ch)
        size += n
    return "".join(out) or "x"


def test_encode_token_fuzz_round_trip_and_injective() -> None:
    rng = random.Random(20240601)
    seen: dict[str, str] = {}
    for _ in range(5000):
        value = _random_id(rng)
        token = _check_token(value)
        other = seen.setdefault(token, value)
        assert other == value, f"{value!r} and {other!r} share token {token!r}"


def test_encode_token_fuzz_close_variants_never_collide() -> None:
    """Ids that differ in one character (escape sequences vs the characters they stand for)."""
    rng = random.Random(7)
    for _ in range(2000):
        base = _random_id(rng)
        i = rng.randrange(len(base))
        variants = {base, base[:i] + "." + base[i + 1 :], base[:i] + "%2E" + base[i + 1 :], base[:i] + base[i + 1 :]}
        variants.discard("")
        tokens = {encode_token(v) for v in variants}
        assert len(tokens) == len(variants), variants


def test_encode_token_of_256_byte_id_fits_a_subject() -> None:
    # 3 bytes per escaped byte: a 256-byte id is at most 768 characters, far below NATS's 4 KiB line.
    value = "é" * 128
    assert len(value.encode()) == MAX_STREAM_ID_BYTES
    token = _check_token(value)
    assert len(token) == 3 * MAX_STREAM_ID_BYTES


# --- Subjects -------------------------------------------------------------------------------


def test_api_subjects() -> None:
    s = Subjects()
    assert s.prefix == "esdb"
    assert s.api("orders", "stream", "append") == "esdb.api.orders.stream.append"
    assert s.api_endpoint("stream", "read") == "esdb.api.*.stream.read"
    assert s.store_of("esdb.api.orders.stream.append") == "orders"
    assert s.store_of("esdb") == ""


def test_custom_prefix() -> None:
    s = Subjects("acme")
    assert s.api("o", "stream", "version") == "acme.api.o.stream.version"
    assert s.log_subject("o", "x") == "acme.log.o.e.x"
    assert s.log_stream("o") == "acme-log-o"


@pytest.mark.parametrize("prefix", ["", "a.b", "a b", "*", ">", "a" * 33, "é", "esdb\n"])
def test_invalid_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ValueError):
        Subjects(prefix)


def test_log_lives_outside_the_api_root() -> None:
    s = Subjects()
    assert s.log_root("o") == "esdb.log.o"
    assert s.log_all("o") == "esdb.log.o.e.*"
    assert s.log_stream("o") == "esdb-log-o"
    assert not s.log_subject("o", "x").startswith("esdb.api.")
    assert s.index_stream("o") == "esdb-ix-o"
    assert s.index_root("o") == "esdb.ix.o"


@pytest.mark.parametrize("stream_id", HOSTILE, ids=[repr(v)[:40] for v in HOSTILE])
def test_log_subject_is_one_token_and_round_trips(stream_id: str) -> None:
    s = Subjects()
    subject = s.log_subject("o", stream_id)
    assert subject.startswith("esdb.log.o.e.")
    assert subject.count(".") == 4
    assert s.stream_id_of(subject) == stream_id


def test_index_event_id_subject_is_one_token() -> None:
    s = Subjects()
    subject = s.index_event_id("o", "id.with.*.>")
    assert subject.count(".") == 4
    assert subject.startswith("esdb.ix.o.id.")


@pytest.mark.parametrize("store", ["a", "orders", "A-b_9", "x" * 64, "_", "-"])
def test_store_re_accepts(store: str) -> None:
    assert STORE_RE.match(store)


@pytest.mark.parametrize("store", ["", "x" * 65, "a.b", "a b", "bad$store", "*", ">", "é", "a%b", "a\n"])
def test_store_re_rejects(store: str) -> None:
    """Callers use ``STORE_RE.match``; a trailing newline must not slip through ``$``."""
    assert not STORE_RE.match(store)


def test_prefix_re() -> None:
    assert PREFIX_RE.match("esdb")
    assert not PREFIX_RE.match("es.db")
