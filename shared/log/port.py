"""The log port: the JetStream operations the stores use, as a ``typing.Protocol``.

Two implementations: ``jetstream.Log`` (a NATS connection) and ``fake.FakeLog`` (in memory, for
unit tests of store and handler logic). ``tests/contract/`` runs one suite of behaviours against
both, so what the fake answers is what the server answers.

The port speaks JetStream's own vocabulary: stream configs and infos are JetStream's JSON
documents, Direct Get requests are ADR-31's, and a publish carries JetStream's headers
(``Nats-Msg-Id``, ``Nats-Expected-Last-Subject-Sequence``, ``Nats-Expected-Last-Sequence``).
Errors, on both implementations:

* ``JetStreamApiError`` with JetStream's ``err_code`` (``jetstream.ERR_*``), e.g. stream not
  found, name in use with another config, subjects overlap, wrong last sequence, bad request;
* ``UnavailableError`` when nothing answers: a publish no stream takes, a Direct Get on a stream
  that does not exist or does not allow direct gets (NATS "no responders");
* ``PayloadTooLargeError`` for a payload over the connection's ``max_payload``.

Port-based (typed ``LogPort``, so they run over the fake too): the stream service's ``EventStore``
and ``EventIdIndex``, and the shared helpers under them: ``stores`` (store listing, configs,
buckets), ``kv`` (subject listing, ``multi_last``, KV values), ``index.create_index_stream``,
``jetstream.create_stream`` and ``consistent_get``. JetStream-only (``jetstream.Log``): consumers
(causation, link, subscription), KV watchers and the raw connection (schema registry, drivers),
counters and rollups (channel, snapshot), message deletes and ``$JS.API.INFO``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Required, TypedDict

__all__ = [
    "BatchGet",
    "LogPort",
    "MsgGet",
    "PubAck",
    "StoredMsg",
    "StreamInfo",
    "StreamList",
    "StreamNames",
    "StreamState",
]


@dataclass(slots=True, frozen=True)
class PubAck:
    seq: int
    duplicate: bool


@dataclass(slots=True, frozen=True)
class StoredMsg:
    """A stored message. ``headers``: the published ones, plus on a Direct Get ``Nats-Stream``,
    ``Nats-Subject``, ``Nats-Sequence``, ``Nats-Time-Stamp`` (and in a batch ``Nats-Num-Pending``,
    ``Nats-Last-Sequence``)."""

    subject: str
    seq: int
    ts_ns: int
    headers: dict[str, str]
    data: bytes


class MsgGet(TypedDict, total=False):
    """One message (ADR-31): ``seq`` (that message), ``last_by_subj``, ``seq`` + ``next_by_subj``
    (the first at or after ``seq`` on the subject filter) or ``start_time`` (RFC 3339, UTC
    ``Z``; the first at or after it, on ``next_by_subj`` when given)."""

    seq: int
    last_by_subj: str
    next_by_subj: str
    start_time: str


class BatchGet(TypedDict, total=False):
    """A batch (ADR-31): ``seq``/``start_time`` + ``batch`` (+ ``next_by_subj``) reads forward;
    ``multi_last`` (subject filters) the last message of each matching subject at or below
    ``up_to_seq``, in sequence order. ``max_bytes``: stop once this much is sent (at least one
    message is)."""

    seq: int
    next_by_subj: str
    start_time: str
    batch: int
    max_bytes: int
    multi_last: list[str]
    up_to_seq: int


class StreamState(TypedDict, total=False):
    messages: int
    first_seq: int
    last_seq: int
    num_subjects: int
    subjects: dict[str, int]  # subject -> messages, with ``subjects_filter`` (absent when none match)


class StreamInfo(TypedDict, total=False):
    """JetStream's stream info; ``total``/``offset``/``limit`` page ``state.subjects``."""

    config: Required[dict[str, Any]]
    state: Required[StreamState]
    total: int
    offset: int
    limit: int


class StreamList(TypedDict, total=False):
    streams: Required[list[StreamInfo] | None]
    total: int
    offset: int
    limit: int


class StreamNames(TypedDict, total=False):
    streams: Required[list[str] | None]
    total: int
    offset: int
    limit: int


class LogPort(Protocol):
    """What a store may ask of the log (see the module docstring for the errors)."""

    # --- streams ------------------------------------------------------------------------------
    async def stream_info(self, stream: str, *, subjects_filter: str | None = None, offset: int = 0) -> StreamInfo:
        """The stream's config and state; with ``subjects_filter``, ``state.subjects`` (a page of
        up to ``limit`` from ``offset``) and ``total``."""
        ...

    async def add_stream(self, config: Mapping[str, Any]) -> StreamInfo:
        """``STREAM.CREATE``: idempotent for the same config; a name in use with another config
        is ``ERR_STREAM_NAME_IN_USE``."""
        ...

    async def stream_names(self, *, subject: str | None = None, offset: int = 0) -> StreamNames:
        """A page of stream names; ``subject``: only streams whose subjects overlap it."""
        ...

    async def list_streams(self, *, subject: str | None = None, offset: int = 0) -> StreamList:
        """A page of stream infos; ``subject``: only streams whose subjects overlap it."""
        ...

    async def purge(
        self, stream: str, *, subject: str | None = None, seq: int | None = None, keep: int | None = None
    ) -> int:
        """Remove the messages on ``subject`` (a filter; all when None) below ``seq``, or all but
        the last ``keep`` (not both); returns how many were removed."""
        ...

    # --- messages -----------------------------------------------------------------------------
    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        """Store a message in the stream that takes ``subject``. A ``Nats-Msg-Id`` seen within the
        stream's duplicate window answers the first one's sequence with ``duplicate`` (after the
        expectation headers are checked, as the server does)."""
        ...

    async def direct_get(self, stream: str, req: MsgGet) -> StoredMsg | None:
        """One message; None when there is none."""
        ...

    async def direct_batch(self, stream: str, req: BatchGet) -> tuple[list[StoredMsg], int]:
        """The messages and how many more match after the last one (0 when none were found)."""
        ...

    async def leader_get(self, stream: str, req: MsgGet) -> StoredMsg | None:
        """Like ``direct_get``, answered by the stream's leader (``STREAM.MSG.GET``), with the
        published headers only; a stream that does not exist is ``ERR_STREAM_NOT_FOUND``."""
        ...
