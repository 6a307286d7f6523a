"""Calls between services (shared/runtime/peers.py): the typed op catalogue matches the callee's
op table, a call sends what the callee expects and raises what it answers, and the control
subjects of a subscription are built and parsed in one place (shared/core/subjects.py)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from esdb_gater.services import SERVICES
from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK
from esdb_gater.shared.core.errors import (
    ERROR_CODE_HEADER,
    InternalError,
    InvalidRequestError,
    StreamNotFoundError,
    UnavailableError,
)
from esdb_gater.shared.core.subjects import ControlSubject, Subjects
from esdb_gater.shared.models import peer_ops
from esdb_gater.shared.models.peer_ops import SNAPSHOT_LIST_STREAM, STREAM_APPEND, STREAM_VERSION, PeerOp
from esdb_gater.shared.models.stream import AppendRequest, VersionRequest, VersionResponse
from esdb_gater.shared.runtime.peers import Peers, make_request

S = Subjects("esdb")


def _catalogue() -> list[PeerOp[Any, Any]]:
    return [v for v in vars(peer_ops).values() if isinstance(v, PeerOp)]


def _tables() -> dict[tuple[str, str, bool], tuple[type[BaseModel], type[BaseModel]]]:
    """(subject token, op, internal) -> (request, reply) of every op of every service."""
    out: dict[tuple[str, str, bool], tuple[type[BaseModel], type[BaseModel]]] = {}
    for name, module_name in SERVICES.items():
        module = importlib.import_module(module_name)
        for op in module.OPS:
            out[(op.token or name, op.name, op.internal)] = (op.request, op.response)
    return out


@pytest.mark.parametrize("op", _catalogue(), ids=lambda op: f"{op.token}.{op.name}")
def test_every_peer_op_is_an_op_of_the_callee_with_its_models(op: PeerOp[Any, Any]) -> None:
    tables = _tables()
    assert (op.token, op.name, op.internal) in tables, f"no service answers {op}"
    request, reply = tables[(op.token, op.name, op.internal)]
    assert op.reply is reply
    if op is SNAPSHOT_LIST_STREAM:  # a stream-wide list the snapshot service does not take yet (ADR 0011)
        return
    assert op.request is request


@dataclass
class _Msg:
    data: bytes
    headers: dict[str, str] | None = None


@dataclass(eq=False)  # hashable: authz keeps policies per connection in a weak map
class _Conn:
    """Answers every request with ``reply`` and remembers what was sent."""

    reply: _Msg
    sent: list[tuple[str, bytes, float, dict[str, str]]] = field(default_factory=list)

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float,  # noqa: ASYNC109  (nats-py's signature)
        headers: dict[str, str],
    ) -> _Msg:
        self.sent.append((subject, payload, timeout, headers))
        return self.reply


def _peers(reply: _Msg) -> tuple[Peers, _Conn]:
    conn = _Conn(reply)
    return Peers(conn, S, timeout=3.0), conn  # type: ignore[arg-type]  # a stand-in connection


async def test_a_call_sends_the_request_model_as_msgpack_and_returns_the_reply_model() -> None:
    peers, conn = _peers(_Msg(MSGPACK.encode({"version": 4}), {CONTENT_TYPE_HEADER: MSGPACK.content_type}))
    reply = await peers.call("demo", STREAM_VERSION, VersionRequest(stream_id="s-1"))
    assert reply == VersionResponse(version=4)
    subject, payload, timeout, headers = conn.sent[0]
    assert subject == "esdb.api.demo.stream.version" and timeout == 3.0
    assert MSGPACK.decode(payload) == {"stream_id": "s-1"}  # only the fields set, as a hand-written body
    assert headers[CONTENT_TYPE_HEADER] == MSGPACK.content_type


async def test_an_internal_op_goes_to_the_services_only_subject_with_its_own_wait() -> None:
    peers, conn = _peers(_Msg(JSON.encode({"version": 0, "position": 1, "count": 1})))
    request = make_request(AppendRequest, stream_id="$link:x", events=[{"event_type": "t"}])
    await peers.call("demo", STREAM_APPEND, request, wait=10.0)
    subject, _, timeout, _ = conn.sent[0]
    assert subject == "esdb.internal.demo.stream.append" and timeout == 10.0


async def test_an_error_reply_is_raised_as_the_callees_error() -> None:
    envelope = {"error": {"code": "stream_not_found", "message": "no such stream", "details": {}}}
    peers, _ = _peers(_Msg(JSON.encode(envelope), {ERROR_CODE_HEADER: "404"}))
    with pytest.raises(StreamNotFoundError, match="no such stream"):
        await peers.call("demo", STREAM_VERSION, VersionRequest(stream_id="s-1"))


async def test_a_reply_that_is_not_the_reply_model_is_an_internal_error() -> None:
    peers, _ = _peers(_Msg(JSON.encode({"nothing": 1})))
    with pytest.raises(InternalError):
        await peers.call("demo", STREAM_VERSION, VersionRequest(stream_id="s-1"))


async def test_no_responder_is_unavailable() -> None:
    from nats.errors import NoRespondersError

    class _Nobody:
        async def request(self, *args: object, **kwargs: object) -> _Msg:
            raise NoRespondersError

    peers = Peers(_Nobody(), S)  # type: ignore[arg-type]  # a stand-in connection
    with pytest.raises(UnavailableError, match="stream service is not answering"):
        await peers.call("demo", STREAM_VERSION, VersionRequest(stream_id="s-1"))


def test_make_request_refuses_as_the_callee_would() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        make_request(AppendRequest, stream_id="s", events=[])
    assert caught.value.message == "invalid request" and caught.value.details["field"] == "events"


def test_control_subjects_are_built_and_parsed_by_subjects() -> None:
    root = S.subscription_control("demo", "k1")
    assert root == "esdb.api.demo.subscription.ctl.k1"
    assert S.subscription_control_all("demo", "k1") == root + ".>"
    native = S.subscription_native_ack("demo", "k1", "abc", 7, 3)
    assert native == root + ".n.abc.7.3"
    assert S.parse_subscription_control("demo", "k1", native) == ControlSubject("native_ack", "abc", 7, 3)
    parked = S.subscription_parked_ack("demo", "k1", "abc", 9)
    assert S.parse_subscription_control("demo", "k1", parked) == ControlSubject("parked_ack", "abc", 9)
    assert S.parse_subscription_control("demo", "k1", S.subscription_ack("demo", "k1")) == ControlSubject("ack")
    assert S.parse_subscription_control("demo", "k1", S.subscription_replay("demo", "k1")) == ControlSubject("replay")
    for other in (root + ".n.abc.x.3", root + ".n.abc.7", root + ".zzz", "esdb.api.demo.subscription.ctl.k2.ack"):
        assert S.parse_subscription_control("demo", "k1", other) is None
