"""The schema service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.schema import handlers as h
from esdb_gater.services.schema.store import SchemaStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import schema as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.runner import Build, Resource
from esdb_gater.shared.upcasting.registry import SchemaRegistry

VERSION = "0.1.0"

OPS: list[Op[h.SchemaCtx]] = [
    Op("register", h.register, m.RegisterSchemaRequest, m.SchemaRecord, "register a version of an event type's schema"),
    Op("get", h.get, m.GetSchemaRequest, m.SchemaRecord, "a schema version (default: the current one)"),
    Op("list", h.list_, m.ListSchemasRequest, m.SchemasResponse, "every event type with a schema"),
    Op("unregister", h.unregister, m.UnregisterSchemaRequest, OkResponse, "remove a type's schemas, or one version"),
    Op("upcast", h.upcast, m.UpcastRequest, m.UpcastResponse, "bring events to their current schema version"),
]


def spec(schemas: SchemaStore, prefix: str = "esdb") -> ServiceSpec[h.SchemaCtx]:
    return ServiceSpec(
        name=f"{prefix}-schema",
        token="schema",
        version=VERSION,
        description="Event schemas with JSON Schema validation and declarative upcasters",
        ops=OPS,
        make_ctx=lambda store: h.SchemaCtx(store=store, schemas=schemas),
    )


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.SchemaCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    registry = SchemaRegistry(log, subjects, idle_evict_s=settings.quotas.idle_evict_s)
    schemas = SchemaStore(log, subjects, settings, registry)
    # stopped in this order: the registry's subscriptions, then the log's inbox
    return spec(schemas, settings.service_name_prefix), [registry, log]


BUILD: Final[Build] = build
