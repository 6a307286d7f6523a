"""The ops one service calls on another, typed: which subject, which request model, which reply.

``shared/runtime/peers.py`` (``Peers.call``) sends them. Each entry names an op of another
service's op table (``services/<name>/service.py``); ``tests/unit/test_peers.py`` checks that
the subject, the models and ``internal`` match that table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from esdb_gater.shared.models.common import OkResponse, Request
from esdb_gater.shared.models.snapshot import SnapshotsResponse
from esdb_gater.shared.models.stream import (
    AppendRequest,
    AppendResponse,
    CreateStoreRequest,
    DeleteRequest,
    EventsResponse,
    ForwardRequest,
    ListRequest,
    ListResponse,
    ReadRequest,
    StoreInfoRequest,
    StoreInfoResponse,
    VersionAtRequest,
    VersionRequest,
    VersionResponse,
)

__all__ = [
    "SNAPSHOT_LIST_STREAM",
    "STORE_CREATE",
    "STORE_INFO",
    "STREAM_APPEND",
    "STREAM_DELETE",
    "STREAM_FORWARD",
    "STREAM_LIST",
    "STREAM_READ",
    "STREAM_VERSION",
    "STREAM_VERSION_AT",
    "PeerOp",
    "StreamSnapshotsRequest",
]

ReqT = TypeVar("ReqT", bound=BaseModel)
RepT = TypeVar("RepT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class PeerOp(Generic[ReqT, RepT]):
    """An op of another service: ``<prefix>.api.<store>.<token>.<name>``, or with ``internal``
    the services-only ``<prefix>.internal.<store>.<token>.<name>`` (ADR 0016)."""

    token: str
    name: str
    request: type[ReqT]
    reply: type[RepT]
    internal: bool = False


class StreamSnapshotsRequest(Request):
    """``snapshot.list`` for every snapshot of a stream, whatever its ``source_uuid``
    (docs/adr/0011-scavenging.md). The snapshot service still requires ``source_uuid`` and answers
    ``invalid_request``; the scavenger then reads the snapshot bucket itself."""

    stream_uuid: str
    include_data: bool = True


# the stream service's store ops (it owns the stores)
STORE_INFO: PeerOp[StoreInfoRequest, StoreInfoResponse] = PeerOp("store", "info", StoreInfoRequest, StoreInfoResponse)
STORE_CREATE: PeerOp[CreateStoreRequest, StoreInfoResponse] = PeerOp(
    "store", "create", CreateStoreRequest, StoreInfoResponse, internal=True
)

# the stream service
STREAM_VERSION: PeerOp[VersionRequest, VersionResponse] = PeerOp("stream", "version", VersionRequest, VersionResponse)
STREAM_VERSION_AT: PeerOp[VersionAtRequest, VersionResponse] = PeerOp(
    "stream", "version_at", VersionAtRequest, VersionResponse
)
STREAM_READ: PeerOp[ReadRequest, EventsResponse] = PeerOp("stream", "read", ReadRequest, EventsResponse)
STREAM_FORWARD: PeerOp[ForwardRequest, EventsResponse] = PeerOp("stream", "forward", ForwardRequest, EventsResponse)
STREAM_LIST: PeerOp[ListRequest, ListResponse] = PeerOp("stream", "list", ListRequest, ListResponse)
STREAM_APPEND: PeerOp[AppendRequest, AppendResponse] = PeerOp(
    "stream", "append", AppendRequest, AppendResponse, internal=True
)
STREAM_DELETE: PeerOp[DeleteRequest, OkResponse] = PeerOp("stream", "delete", DeleteRequest, OkResponse, internal=True)

# the snapshot service
SNAPSHOT_LIST_STREAM: PeerOp[StreamSnapshotsRequest, SnapshotsResponse] = PeerOp(
    "snapshot", "list", StreamSnapshotsRequest, SnapshotsResponse
)
