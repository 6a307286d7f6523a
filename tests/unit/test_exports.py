"""The stream service's wire surface, pinned: every subject it answers, its request and reply
models, and its ADR-32 identity. A change here is a wire change and must show up as a diff."""

from __future__ import annotations

from esdb_gater.services.stream import service
from esdb_gater.services.stream.handlers import StreamCtx
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.runtime.endpoint import ServiceSpec

PINNED_SUBJECTS = [
    "esdb.api.*.stream.append",
    "esdb.api.*.stream.append_multi",
    "esdb.api.*.stream.read",
    "esdb.api.*.stream.forward",
    "esdb.api.*.stream.backward",
    "esdb.api.*.stream.version",
    "esdb.api.*.stream.exists",
    "esdb.api.*.stream.list",
    "esdb.api.*.stream.delete",
    "esdb.api.*.stream.read_until",
    "esdb.api.*.stream.read_range",
    "esdb.api.*.stream.version_at",
    "esdb.api.*.stream.read_all",
    "esdb.api.*.stream.checkpoint",
    "esdb.api.*.store.create",
    "esdb.api.*.store.info",
    "esdb.api.*.store.reindex",
    "esdb.internal.*.stream.append",
    "esdb.internal.*.stream.delete",
    "esdb.internal.*.store.create",
]

# (subject token, op) -> (request model, reply model, scope)
PINNED_OPS = {
    ("stream", "append"): ("AppendRequest", "AppendResponse", "store"),
    ("stream", "append_multi"): ("AppendMultiRequest", "AppendMultiResponse", "store"),
    ("stream", "read_all"): ("ReadAllRequest", "ReadAllResponse", "store"),
    ("stream", "checkpoint"): ("CheckpointRequest", "CheckpointResponse", "store"),
    ("stream", "read"): ("ReadRequest", "EventsResponse", "store"),
    ("stream", "forward"): ("ForwardRequest", "EventsResponse", "store"),
    ("stream", "backward"): ("BackwardRequest", "EventsResponse", "store"),
    ("stream", "version"): ("VersionRequest", "VersionResponse", "store"),
    ("stream", "exists"): ("ExistsRequest", "ExistsResponse", "store"),
    ("stream", "list"): ("ListRequest", "ListResponse", "store"),
    ("stream", "delete"): ("DeleteRequest", "OkResponse", "store"),
    ("stream", "read_until"): ("ReadUntilRequest", "EventsResponse", "store"),
    ("stream", "read_range"): ("ReadRangeRequest", "EventsResponse", "store"),
    ("stream", "version_at"): ("VersionAtRequest", "VersionResponse", "store"),
    ("store", "create"): ("CreateStoreRequest", "StoreInfoResponse", "store"),
    ("store", "info"): ("StoreInfoRequest", "StoreInfoResponse", "store"),
    ("store", "reindex"): ("ReindexRequest", "ReindexResponse", "store"),
}


def _spec() -> ServiceSpec[StreamCtx]:
    return service.spec(events=None)  # type: ignore[arg-type]  # the table needs no store


def test_stream_service_subjects_are_pinned() -> None:
    spec = _spec()
    subjects = Subjects()
    actual = [
        (subjects.internal_endpoint if op.internal else subjects.api_endpoint)(op.token or spec.token, op.name)
        for op in spec.ops
    ]
    assert actual == PINNED_SUBJECTS


def test_stream_service_ops_are_pinned() -> None:
    spec = _spec()
    actual = {
        (op.token or spec.token, op.name): (op.request.__name__, op.response.__name__, op.scope)
        for op in spec.ops
        if not op.internal
    }
    assert actual == PINNED_OPS


def test_op_names_are_unique_per_token() -> None:
    spec = _spec()
    keys = [(op.internal, op.token or spec.token, op.name) for op in spec.ops]
    assert len(keys) == len(set(keys))


def test_every_op_has_a_description() -> None:
    for op in service.OPS:
        assert op.description, op.name


def test_service_identity() -> None:
    spec = _spec()
    assert spec.name == "esdb-stream"
    assert spec.token == "stream"
    parts = spec.version.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    assert service.spec(events=None, prefix="acme").name == "acme-stream"  # type: ignore[arg-type]
