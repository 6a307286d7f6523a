"""The client-named target classifier (``Subjects.is_reserved`` / ``target_problem`` /
``check_target``, docs/adr/0013-reply-and-target-subjects.md), and the guard that keeps it from
drifting: every subject any builder of ``Subjects`` makes is reserved."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.core.subjects import Subjects

S = Subjects("esdb")


_NOT_BUILDERS = {"is_reserved", "target_problem", "check_target", "store_of", "stream_id_of"}


def _sample_args(fn: Any) -> list[Any]:
    args: list[Any] = []
    for p in inspect.signature(fn).parameters.values():
        if p.default is not inspect.Parameter.empty:
            continue
        ann = str(p.annotation)
        args.append(7 if "int" in ann else "x")
    return args


def _built_subjects(s: Subjects) -> list[tuple[str, str]]:
    """(builder, subject) for every builder returning a NATS subject (names of JetStream streams,
    KV buckets and object stores have no '.' and are not subjects)."""
    out: list[tuple[str, str]] = []
    for name, fn in inspect.getmembers(s, callable):
        if name.startswith("_") or name in _NOT_BUILDERS:
            continue
        args = _sample_args(fn)
        try:
            value = fn(*args)
        except Exception:
            continue
        values = value if isinstance(value, list) else [value]
        out.extend((name, v) for v in values if isinstance(v, str) and "." in v)
    return out


def test_every_builder_subject_is_reserved() -> None:
    built = _built_subjects(S)
    names = {n for n, _ in built}
    # the guard sees the builders it must (if this shrinks, the introspection broke)
    assert {"api", "log_subject", "index_event_id", "dlq_subject", "channel", "channel_log", "channel_rate"} <= names
    assert {"channel_replay", "subscription_control", "kv_subject", "obj_chunks", "srv_ping"} <= names
    for name, subject in built:
        assert S.is_reserved(subject), (name, subject)
        assert S.target_problem(subject.replace("*", "x").replace(">", "x")) == "reserved", (name, subject)


def test_every_builder_subject_is_reserved_for_another_prefix_too() -> None:
    other = Subjects("tenant-a")
    for name, subject in _built_subjects(other):
        assert other.is_reserved(subject), (name, subject)


@pytest.mark.parametrize(
    "subject",
    [
        "esdb",
        "esdb.api.x.stream.append",
        "esdb.log.b.e.acct-2",
        "esdb.anything",
        "$JS.API.INFO",
        "$KV.b.k",
        "$O.b.C.x",
        "$SYS.REQ.SERVER.PING",
        "$SRV.PING",
        "$MQTT.x",
    ],
)
def test_reserved(subject: str) -> None:
    assert S.is_reserved(subject)


@pytest.mark.parametrize("subject", ["_INBOX.abc", "_R_.x.y", "payments.execute", "esdbx.y", "my.esdb.log", "e"])
def test_not_reserved(subject: str) -> None:
    assert not S.is_reserved(subject)
    assert S.target_problem(subject) is None


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("", "malformed"),
        ("a b", "malformed"),
        ("a\tb", "malformed"),
        ("ünï", "malformed"),
        ("a..b", "malformed"),
        (".a", "malformed"),
        ("a.", "malformed"),
        ("x" * 513, "malformed"),
        ("_INBOX.*", "wildcard"),
        ("_INBOX.>", "wildcard"),
        ("a.b*", "wildcard"),
        ("$JS.API.>", "reserved"),
        ("esdb.ch.alerts.fire", "reserved"),
    ],
)
def test_target_problem(subject: str, reason: str) -> None:
    assert S.target_problem(subject) == reason


def test_allow_list_narrows() -> None:
    assert S.target_problem("_INBOX.orders.1", ["_INBOX.orders."]) is None
    assert S.target_problem("_INBOX.billing.1", ["_INBOX.orders."]) == "not_allowed"
    assert S.target_problem("_INBOX.billing.1", []) == "not_allowed"  # an empty list allows nothing
    # an allow-list never re-admits the reserved space
    assert S.target_problem("esdb.log.x.e.y", ["esdb."]) == "reserved"


def test_check_target_raises_invalid_request_with_field_and_reason() -> None:
    assert S.check_target("_INBOX.x", "subscriber") == "_INBOX.x"
    with pytest.raises(InvalidRequestError) as ei:
        S.check_target("esdb.log.x.e.y", "subscriber")
    assert ei.value.details == {"field": "subscriber", "reason": "reserved"}


@pytest.mark.parametrize("token", ["%ZZ", "%FF", "%41", "a%", "%+4", "%4"])
def test_stream_id_of_refuses_tokens_we_never_make(token: str) -> None:
    with pytest.raises(ValueError):
        S.stream_id_of(f"esdb.log.x.e.{token}")


@pytest.mark.parametrize("stream_id", ["orders-42", "a.b", "ünï", "*", ">", "%", "$link:x"])
def test_stream_id_of_round_trips(stream_id: str) -> None:
    assert S.stream_id_of(S.log_subject("x", stream_id)) == stream_id
