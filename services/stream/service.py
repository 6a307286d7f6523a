"""The stream service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.stream import handlers as h
from esdb_gater.services.stream.store import EventStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import stream as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.memory import monitor_from
from esdb_gater.shared.runtime.runner import Build, Resource
from esdb_gater.shared.upcasting.registry import SchemaRegistry

VERSION = "0.1.0"

OPS: list[Op[h.StreamCtx]] = [
    Op("append", h.append, m.AppendRequest, m.AppendResponse, "append events atomically with an expected version"),
    Op(
        "append_multi",
        h.append_multi,
        m.AppendMultiRequest,
        m.AppendMultiResponse,
        "append to several streams (and a checkpoint) atomically, each with an expected version",
    ),
    Op("read", h.read, m.ReadRequest, m.EventsResponse, "read events forward or backward"),
    Op("forward", h.forward, m.ForwardRequest, m.EventsResponse, "read events forward"),
    Op("backward", h.backward, m.BackwardRequest, m.EventsResponse, "read events backward (-1 = from the end)"),
    Op("version", h.version, m.VersionRequest, m.VersionResponse, "last version of a stream (-1 if none)"),
    Op("exists", h.exists, m.ExistsRequest, m.ExistsResponse, "whether a stream has events"),
    Op("list", h.list_, m.ListRequest, m.ListResponse, "stream ids, sorted, paginated"),
    Op("delete", h.delete, m.DeleteRequest, OkResponse, "delete a stream (ok when missing)"),
    Op("read_until", h.read_until, m.ReadUntilRequest, m.EventsResponse, "events up to an epoch_us"),
    Op("read_range", h.read_range, m.ReadRangeRequest, m.EventsResponse, "events between two epoch_us"),
    Op("version_at", h.version_at, m.VersionAtRequest, m.VersionResponse, "stream version at an epoch_us"),
    Op("read_all", h.read_all, m.ReadAllRequest, m.ReadAllResponse, "every event of the store in log order, paged"),
    Op("checkpoint", h.checkpoint, m.CheckpointRequest, m.CheckpointResponse, "a checkpoint of append_multi"),
    Op("create", h.store_create, m.CreateStoreRequest, m.StoreInfoResponse, "create a store", token="store"),
    Op("info", h.store_info, m.StoreInfoRequest, m.StoreInfoResponse, "describe a store", token="store"),
    Op(
        "reindex",
        h.store_reindex,
        m.ReindexRequest,
        m.ReindexResponse,
        "rebuild the store's event-id index from its log (admin)",
        token="store",
    ),
    # services only (<prefix>.internal.*.stream.<op>, ADR 0016): writes to reserved ($...) streams
    Op("append", h.append_internal, m.AppendRequest, m.AppendResponse, "append (services only)", internal=True),
    Op("delete", h.delete_internal, m.DeleteRequest, OkResponse, "delete a stream (services only)", internal=True),
    Op(
        "create",
        h.store_create_on_first_use,
        m.CreateStoreRequest,
        m.StoreInfoResponse,
        "create a store on first use (services only)",
        token="store",
        internal=True,
    ),
]


def spec(events: EventStore, prefix: str = "esdb", schemas: SchemaRegistry | None = None) -> ServiceSpec[h.StreamCtx]:
    return ServiceSpec(
        name=f"{prefix}-stream",
        token="stream",
        version=VERSION,
        description="Event streams on JetStream: append with expected version, reads, temporal queries",
        ops=OPS,
        make_ctx=lambda store: h.StreamCtx(store=store, events=events, schemas=schemas),
    )


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.StreamCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    events = EventStore(log, subjects, settings, memory=monitor_from(settings))
    for name, cfg in settings.stores.items():
        await events.create_store(name, cfg)
    # stopped before the log whose inbox it uses
    schemas = SchemaRegistry(log, subjects, idle_evict_s=settings.quotas.idle_evict_s)
    return spec(events, settings.service_name_prefix, schemas), [schemas, log]


BUILD: Final[Build] = build
