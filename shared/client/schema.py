"""The schema service's ops (seed names; docs/api/schema.md): the registry and upcasting."""

from __future__ import annotations

from typing import Any

from esdb_gater.shared.client.transport import Transport, decode_events
from esdb_gater.shared.models.schema import SchemaRecord, SchemaSummary
from esdb_gater.shared.models.stream import RecordedEvent

__all__ = ["SchemaMethods"]


class SchemaMethods(Transport):
    async def register_schema(self, store: str, event_type: str, schema: dict[str, Any]) -> SchemaRecord:
        """``schema``: ``version``, and optionally ``json_schema``, ``description``,
        ``upcast_from`` (docs/api/schema.md)."""
        reply = await self.request(store, "schema", "register", {"event_type": event_type, "schema": schema})
        return SchemaRecord.model_validate(reply)

    async def get_schema(self, store: str, event_type: str, version: int | None = None) -> SchemaRecord:
        body: dict[str, Any] = {"event_type": event_type}
        if version is not None:
            body["version"] = version
        return SchemaRecord.model_validate(await self.request(store, "schema", "get", body))

    async def list_schemas(self, store: str) -> list[SchemaSummary]:
        reply = await self.request(store, "schema", "list", {})
        return [SchemaSummary.model_validate(s) for s in reply["schemas"]]

    async def unregister_schema(self, store: str, event_type: str, version: int | None = None) -> None:
        body: dict[str, Any] = {"event_type": event_type}
        if version is not None:
            body["version"] = version
        await self.request(store, "schema", "unregister", body)

    async def upcast_events(self, store: str, events: list[Any]) -> list[Any]:
        """Events (dicts or RecordedEvents) at their types' current schema versions; each comes
        back as the kind it was given."""
        wire = [e.model_dump(mode="python") if isinstance(e, RecordedEvent) else dict(e) for e in events]
        reply = await self.request(store, "schema", "upcast", {"events": wire})
        out: list[Any] = []
        for given, ev in zip(events, reply["events"], strict=True):
            out.append(decode_events({"events": [ev]})[0] if isinstance(given, RecordedEvent) else ev)
        return out
