"""Wire models of the causation service (``<prefix>.api.<store>.causation.<op>``), SPEC.md §7.

The seed's ``get_effects(store, event_id)``, ``get_cause``, ``get_causation_chain``,
``get_correlated(store, correlation_id)`` and ``build_causation_graph(store, id)``; answered from
indexes kept as events are written (docs/adr/0012-causation-index.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esdb_gater.shared.models.common import Request, Response

__all__ = [
    "CauseResponse",
    "ChainRequest",
    "CorrelatedRequest",
    "Edge",
    "EventIdRequest",
    "GraphRequest",
    "GraphResponse",
]

_ID = Field(min_length=1, max_length=256)
_RAW = Field(default=False, description="true: events as stored, without upcasting to the current schema")


class EventIdRequest(Request):
    event_id: str = _ID
    raw: bool = _RAW


class ChainRequest(EventIdRequest):
    max_depth: int = Field(default=1000, ge=1, le=10_000, description="causes followed at most")


class CorrelatedRequest(Request):
    correlation_id: str = _ID
    raw: bool = _RAW


class GraphRequest(Request):
    """Exactly one of ``event_id`` (the graph of its root's effects), ``correlation_id`` (the
    correlated events and the causation edges between them) or ``id`` (the seed's argument: an
    event id when such an event exists, else a correlation id)."""

    event_id: str | None = Field(default=None, min_length=1, max_length=256)
    correlation_id: str | None = Field(default=None, min_length=1, max_length=256)
    id: str | None = Field(default=None, min_length=1, max_length=256)
    format: Literal["json", "dot"] = Field(default="json", description="dot: also return Graphviz text")
    max_nodes: int = Field(default=10_000, ge=1, le=100_000)
    raw: bool = _RAW

    @model_validator(mode="after")
    def _one(self) -> GraphRequest:
        given = [k for k in ("event_id", "correlation_id", "id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of event_id, correlation_id, id")
        return self


class CauseResponse(Response):
    event: dict[str, Any] = Field(description="the cause, as reads return events")


class Edge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="the cause's event id")
    to: str = Field(description="the effect's event id")


class GraphResponse(Response):
    nodes: list[dict[str, Any]] = Field(description="the events of the graph, as reads return them, by time")
    edges: list[Edge]
    roots: list[str] = Field(description="event ids without a cause in the graph")
    leaves: list[str] = Field(description="event ids without an effect in the graph")
    truncated: bool = Field(default=False, description="max_nodes was reached")
    dot: str | None = Field(default=None, description="Graphviz text (format dot)")

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "nodes": self.nodes,
            "edges": [{"from": e.from_, "to": e.to} for e in self.edges],
            "roots": self.roots,
            "leaves": self.leaves,
            "truncated": self.truncated,
        }
        if self.dot is not None:
            out["dot"] = self.dot
        return out
