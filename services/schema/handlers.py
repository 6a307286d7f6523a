"""One async function per subject of the schema service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esdb_gater.services.schema.store import SchemaStore, stored_doc
from esdb_gater.shared.core.errors import NotFoundError
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.schema import (
    GetSchemaRequest,
    ListSchemasRequest,
    RegisterSchemaRequest,
    SchemaRecord,
    SchemasResponse,
    SchemaSummary,
    UnregisterSchemaRequest,
    UpcastRequest,
    UpcastResponse,
)
from esdb_gater.shared.upcasting.steps import TypeSchemas


@dataclass(frozen=True, slots=True)
class SchemaCtx:
    store: str
    schemas: SchemaStore


def _record(t: TypeSchemas, version: int) -> SchemaRecord:
    body: dict[str, Any] = stored_doc(t)["versions"][str(version)]
    return SchemaRecord.model_construct(
        event_type=t.event_type,
        version=version,
        json_schema=body.get("json_schema"),
        description=body.get("description"),
        upcast_from=body.get("upcast_from", {}),
        registered_at=body["registered_at"],
        current_version=t.current,
        versions=sorted(t.versions),
    )


async def register(req: RegisterSchemaRequest, ctx: SchemaCtx) -> SchemaRecord:
    t = await ctx.schemas.register(ctx.store, req.event_type, req.schema_)
    return _record(t, req.schema_.version)


async def get(req: GetSchemaRequest, ctx: SchemaCtx) -> SchemaRecord:
    schemas = await ctx.schemas.schemas(ctx.store)
    t = schemas.types.get(req.event_type)
    if t is None:
        raise NotFoundError(f"no schema for event type {req.event_type!r}", details={"event_type": req.event_type})
    version = t.current if req.version is None else req.version
    if version not in t.versions:
        raise NotFoundError(
            f"event type {req.event_type!r} has no schema version {version}",
            details={"event_type": req.event_type, "version": version, "versions": sorted(t.versions)},
        )
    return _record(t, version)


async def list_(req: ListSchemasRequest, ctx: SchemaCtx) -> SchemasResponse:
    schemas = await ctx.schemas.schemas(ctx.store)
    out = [
        SchemaSummary(
            event_type=t.event_type,
            version=t.current,
            versions=sorted(t.versions),
            registered_at=t.registered_at.get(t.current, 0),
            description=t.versions[t.current].description,
        )
        for _, t in sorted(schemas.types.items())
    ]
    return SchemasResponse(schemas=out)


async def unregister(req: UnregisterSchemaRequest, ctx: SchemaCtx) -> OkResponse:
    await ctx.schemas.unregister(ctx.store, req.event_type, req.version)
    return OkResponse()


async def upcast(req: UpcastRequest, ctx: SchemaCtx) -> UpcastResponse:
    schemas = await ctx.schemas.schemas(ctx.store)
    rows = [ev.model_dump() for ev in req.events]
    return UpcastResponse.from_rows(schemas.upcast(rows))
