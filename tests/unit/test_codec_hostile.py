"""The codecs' value checks (issue 10 "every input gets a reply"), the endpoint's reply-subject
filter and error-reply fallback, and the event log's tolerance of corrupt entries."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import msgpack
import pytest

from esdb_gater.shared.core.codec import _JSON_SUSPECT, INT_MAX, INT_MIN, JSON, MSGPACK, _json_suspect, check_value
from esdb_gater.shared.core.errors import InvalidRequestError, NotFoundError
from esdb_gater.shared.log.eventlog import Commit, CorruptEntryError, commit_of, decode_commit, encode_events, is_commit
from esdb_gater.shared.log.jetstream import StoredMsg
from esdb_gater.shared.models.stream import EventIn
from esdb_gater.shared.runtime import endpoint

# --- codecs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"a":18446744073709551616}', "a"),
        (b'{"a":-9223372036854775809}', "a"),
        (b'{"a":[0,{"b":99999999999999999999999}]}', "a.1.b"),
        (b'{"a":1e400}', "a"),
        (b'{"a":-1E+999}', "a"),
        (b'{"a":"\\ud800"}', "a"),
        (b'{"a":"x\\uDFFF"}', "a"),
        (b'{"\\ud800":1}', "body"),
        (b'["\\udbff"]', "0"),
    ],
)
def test_json_refuses(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        JSON.decode(raw)
    assert ei.value.details["field"] == field


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":18446744073709551615}',
        b'{"a":-9223372036854775808}',
        b'{"a":1e300}',
        b'{"a":"\\ud83d\\ude00"}',  # a surrogate pair is one valid character
        b'{"card":"4111111111111111111111"}',  # digits in a string trigger the walk, pass it
    ],
)
def test_json_accepts(raw: bytes) -> None:
    assert JSON.decode(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [b'{"a":"x\xed\xa0\x80"}', b'{"\xed\xbf\xbf":1}', b'{"a":"\xff"}'])
def test_json_refuses_bytes_that_are_not_utf8_even_raw_surrogates(raw: bytes) -> None:
    """json.loads decodes with surrogatepass: raw surrogate bytes became a lone surrogate that no
    escape scan sees and that failed later, as ``internal``. Now the body is not valid JSON."""
    with pytest.raises(InvalidRequestError) as ei:
        JSON.decode(raw)
    assert ei.value.details["field"] == "body"


def test_the_suspect_scan_finds_what_the_regex_finds() -> None:
    """``_json_suspect`` (a byte translation and substring tests) against the regex it replaced."""
    rnd = random.Random(11)
    alphabet = b'0123456789eE+-\\udD89aAfF {}":,.x'
    for _ in range(50_000):
        data = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        if rnd.random() < 0.3:
            data += b"7" * rnd.randint(15, 22)
        assert _json_suspect(data) == bool(_JSON_SUSPECT.search(data)), data


def test_msgpack_refuses_non_finite_and_bytes_keys_and_big_timestamps() -> None:
    for value in ({"f": float("inf")}, {"f": float("nan")}, {b"k": 1}):
        with pytest.raises(InvalidRequestError):
            MSGPACK.decode(msgpack.packb(value, use_bin_type=True))
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(b"\x81\xa1f\xca" + struct.pack(">f", float("inf")))  # float32
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(msgpack.packb({"t": msgpack.Timestamp(2**40, 0)}, datetime=False))
    with pytest.raises(InvalidRequestError):
        MSGPACK.decode(b"\x81\xa1s\xa2\xff\xfe")  # str that is not UTF-8


def test_msgpack_accepts_edges_and_bytes_values() -> None:
    value = {"u": INT_MAX, "i": INT_MIN, "b": b"\xff\x00", "f": 1.5}
    assert MSGPACK.decode(MSGPACK.encode(value)) == value


def test_check_value_names_the_first_bad_field_and_caps_its_length() -> None:
    with pytest.raises(InvalidRequestError) as ei:
        check_value({"k" * 500: 2**70})
    assert len(ei.value.details["field"]) == 200
    assert check_value({"ok": [1, "x", None, True, 2.5]}) == {"ok": [1, "x", None, True, 2.5]}


# --- endpoint: reply subjects and the error fallback --------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "ok"),
    [
        ("_INBOX.abc.1", True),
        ("_R_.xyz.1", True),
        ("_INBOX", False),
        ("esdb.log.b.e.acct-2", False),
        ("esdb.ch.alerts.fire", False),
        ("payments.execute", False),
        ("_INBOXES.x", False),
    ],
)
def test_reply_allowed(reply: str, ok: bool) -> None:
    assert endpoint.reply_allowed(reply, endpoint.DEFAULT_REPLY_PREFIXES) is ok


def test_drop_log_is_bounded_and_logs_once_per_key() -> None:
    drops = endpoint._DropLog(size=3)
    assert drops.first("stream.version", "esdb.log.a.e.x")
    assert not drops.first("stream.version", "esdb.log.b.e.y")  # same first two tokens
    assert drops.first("channel.list", "esdb.log.a.e.x")  # another op
    for i in range(10):
        drops.first("op", f"app{i}.x")
    assert len(drops.seen) == 3


@pytest.mark.parametrize("details", [{"name": "\ud800"}, {"obj": object()}, {"k": {1, 2}}])
@pytest.mark.parametrize("codec", [JSON, MSGPACK])
def test_an_error_that_cannot_be_encoded_falls_back_to_a_plain_one(details: dict[str, Any], codec: Any) -> None:
    err = NotFoundError("no link named '\ud800'", details=details)
    body = codec.decode(endpoint._error_body(codec, err))
    assert body["error"]["code"] == "not_found"
    assert body["error"]["details"] == {}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["retryable"] is False


def test_an_encodable_error_keeps_its_details() -> None:
    err = NotFoundError("gone", details={"name": "x"})
    assert JSON.decode(endpoint._error_body(JSON, err))["error"]["details"] == {"name": "x"}


# --- event log: corrupt entries ------------------------------------------------------------------------


def _sm(data: bytes, headers: dict[str, str], seq: int = 5) -> StoredMsg:
    return StoredMsg(subject="esdb.log.s.e.x", seq=seq, ts_ns=1_000_000_000, headers=headers, data=data)


def test_decode_commit_of_a_real_commit() -> None:
    data = encode_events([EventIn(event_type="E", data={"n": 1})], ["id-1"])
    sm = _sm(data, {"Esdb-Version": "3", "Esdb-Count": "1"})
    assert is_commit(sm)
    assert commit_of(sm) == Commit(seq=5, first=3, count=1, ts_ns=1_000_000_000)
    [ev] = decode_commit(sm, "x")
    assert (ev["event_id"], ev["version"], ev["data"]) == ("id-1", 3, {"n": 1})


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"raw", {}),
        (b"\x91\x80", {"Esdb-Version": "x", "Esdb-Count": "1"}),
        (b"\x91\x80", {"Esdb-Version": "-1", "Esdb-Count": "1"}),
        (b"\x91\x80", {"Esdb-Version": "0", "Esdb-Count": "0"}),
        (b"not msgpack", {"Esdb-Version": "0", "Esdb-Count": "1"}),
        (b"\x91\x80", {"Esdb-Version": "0", "Esdb-Count": "1"}),  # an event without id and type
        (msgpack.packb([{"i": "a", "t": "E"}]), {"Esdb-Version": "0", "Esdb-Count": "2"}),  # count disagrees
        (msgpack.packb({"i": "a"}), {"Esdb-Version": "0", "Esdb-Count": "1"}),
    ],
)
def test_a_corrupt_entry_decodes_to_nothing(data: bytes, headers: dict[str, str]) -> None:
    assert decode_commit(_sm(data, headers), "x") == []


def test_commit_of_a_message_without_headers_raises_corrupt_entry() -> None:
    sm = _sm(b"raw", {})
    assert not is_commit(sm)
    with pytest.raises(CorruptEntryError):
        commit_of(sm)


def test_commit_subject_seq() -> None:
    assert Commit(4, 0, 2, 0).subject_seq == 4
    assert Commit(4, 0, 2, 0, tail=9).subject_seq == 9
    assert Commit(0, 0, 0, 0, tail=3).last == -1
