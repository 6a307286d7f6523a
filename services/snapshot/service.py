"""The snapshot service's op table: one line per subject."""

from __future__ import annotations

from services.snapshot import handlers as h
from services.snapshot.store import SnapshotStore
from shared.endpoint import Op, ServiceSpec
from shared.models import snapshot as m
from shared.models.common import OkResponse

VERSION = "0.1.0"

OPS: list[Op[h.SnapshotCtx]] = [
    Op(
        "record",
        h.record,
        m.RecordSnapshotRequest,
        m.RecordSnapshotResponse,
        "record a snapshot (or one chunk of a large one)",
    ),
    Op("read", h.read, m.ReadSnapshotRequest, m.Snapshot, "read a snapshot at a version or the latest"),
    Op("read_chunk", h.read_chunk, m.ReadChunkRequest, m.ReadChunkResponse, "read one chunk of a large snapshot"),
    Op("delete", h.delete, m.DeleteSnapshotRequest, OkResponse, "delete a snapshot (ok when missing)"),
    Op("list", h.list_, m.ListSnapshotsRequest, m.SnapshotsResponse, "snapshots of a stream, ascending by version"),
]


def spec(snapshots: SnapshotStore, prefix: str = "esdb") -> ServiceSpec[h.SnapshotCtx]:
    return ServiceSpec(
        name=f"{prefix}-snapshot",
        token="snapshot",
        version=VERSION,
        description="Aggregate snapshots in JetStream KV, large ones in the Object Store",
        ops=OPS,
        make_ctx=lambda store: h.SnapshotCtx(store=store, snapshots=snapshots),
    )


async def build(nc: object, settings: object) -> tuple[ServiceSpec[h.SnapshotCtx], list[object]]:
    """Construct the service over a connection: (spec, resources with async stop)."""
    from nats.aio.client import Client

    from shared.jetstream import Log
    from shared.settings import Settings
    from shared.subjects import Subjects

    assert isinstance(nc, Client) and isinstance(settings, Settings)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    snapshots = SnapshotStore(log, Subjects(settings.subject_prefix), settings)
    return spec(snapshots, settings.service_name_prefix), [log]
