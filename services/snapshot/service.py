"""The snapshot service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.snapshot import handlers as h
from esdb_gater.services.snapshot.store import SnapshotStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import snapshot as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.runner import Build, Resource

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


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.SnapshotCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    snapshots = SnapshotStore(log, Subjects(settings.subject_prefix), settings)
    return spec(snapshots, settings.service_name_prefix), [log]


BUILD: Final[Build] = build
