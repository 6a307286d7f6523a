"""The causation service's ops (seed names; docs/api/causation.md)."""

from __future__ import annotations

from esdb_gater.shared.client.transport import Transport, decode_events
from esdb_gater.shared.models.causation import GraphResponse
from esdb_gater.shared.models.stream import RecordedEvent

__all__ = ["CausationMethods"]


class CausationMethods(Transport):
    async def get_effects(self, store: str, event_id: str) -> list[RecordedEvent]:
        return decode_events(await self.request(store, "causation", "effects", {"event_id": event_id}))

    async def get_cause(self, store: str, event_id: str) -> RecordedEvent:
        """The event's cause; ``NoCauseError`` when it has none, ``NotFoundError`` when unknown."""
        reply = await self.request(store, "causation", "cause", {"event_id": event_id})
        return decode_events({"events": [reply["event"]]})[0]

    async def get_causation_chain(self, store: str, event_id: str) -> list[RecordedEvent]:
        """Root first, ending with the event itself."""
        return decode_events(await self.request(store, "causation", "chain", {"event_id": event_id}))

    async def get_correlated(self, store: str, correlation_id: str) -> list[RecordedEvent]:
        reply = await self.request(store, "causation", "correlated", {"correlation_id": correlation_id})
        return decode_events(reply)

    async def build_causation_graph(self, store: str, id: str, *, format: str = "json") -> GraphResponse:
        """``build_causation_graph(store, id)``: ``id`` is an event id, else a correlation id.
        ``format="dot"`` adds Graphviz text (``.dot``)."""
        reply = await self.request(store, "causation", "graph", {"id": id, "format": format})
        return GraphResponse.model_validate(reply)
