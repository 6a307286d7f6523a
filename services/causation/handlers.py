"""One async function per subject of the causation service. No bytes, headers or JetStream here.

Every query first waits (briefly) until the store's index has caught up with the appends made
before it, so a query sees every event written before it was sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from esdb_gater.services.causation.indexer import IndexerPool
from esdb_gater.services.causation.store import CausationStore, caused_by, correlated_with
from esdb_gater.shared.core.errors import NoCauseError, NotFoundError
from esdb_gater.shared.models.causation import (
    CauseResponse,
    ChainRequest,
    CorrelatedRequest,
    Edge,
    EventIdRequest,
    GraphRequest,
    GraphResponse,
)
from esdb_gater.shared.models.stream import EventsResponse

__all__ = ["CausationCtx", "cause", "chain", "correlated", "effects", "graph", "to_dot"]

CATCH_UP_WAIT_S: Final = 3.0

Upcaster = Callable[[str, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CausationCtx:
    store: str
    db: CausationStore
    pool: IndexerPool
    upcast: Upcaster | None = None


def _by_time(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e["epoch_us"], e["position"], e["version"]))


async def _ready(ctx: CausationCtx) -> None:
    if ctx.store not in ctx.pool.indexers:
        ctx.pool.poke()
    await ctx.db.wait_indexed(ctx.store, CATCH_UP_WAIT_S)


async def _out(ctx: CausationCtx, events: list[Event], raw: bool) -> list[Event]:
    if raw or ctx.upcast is None or not events:
        return events
    return await ctx.upcast(ctx.store, events)


def _cause_id(ev: Event) -> str | None:
    value = (ev.get("metadata") or {}).get("causation_id")
    if isinstance(value, bool) or value is None or value == "":
        return None
    return str(value) if isinstance(value, int | str) else None


async def _event(ctx: CausationCtx, event_id: str) -> Event:
    ev = await ctx.db.event(ctx.store, event_id)
    if ev is None:
        raise NotFoundError(f"no event with id {event_id!r}", details={"event_id": event_id})
    return ev


async def effects(req: EventIdRequest, ctx: CausationCtx) -> EventsResponse:
    """Events whose ``metadata.causation_id`` is the id, by time (``[]`` for an unknown id)."""
    await _ready(ctx)
    evs = await ctx.db.events(ctx.store, await ctx.db.effects(ctx.store, req.event_id), caused_by(req.event_id))
    return EventsResponse.from_rows(await _out(ctx, _by_time(evs), req.raw))


async def cause(req: EventIdRequest, ctx: CausationCtx) -> CauseResponse:
    await _ready(ctx)
    ev = await _event(ctx, req.event_id)
    cid = _cause_id(ev)
    if cid is None:
        raise NoCauseError(f"event {req.event_id!r} has no causation_id", details={"event_id": req.event_id})
    found = await ctx.db.event(ctx.store, cid)
    if found is None:
        raise NotFoundError(
            f"the cause {cid!r} of event {req.event_id!r} is not in the store",
            details={"event_id": req.event_id, "causation_id": cid},
        )
    return CauseResponse(event=(await _out(ctx, [found], req.raw))[0])


async def _chain(ctx: CausationCtx, event_id: str, max_depth: int) -> list[Event]:
    """Root first, ending with the event; stops at the first cause not in the store (or a cycle)."""
    ev = await _event(ctx, event_id)
    out = [ev]
    seen = {ev["event_id"]}
    while len(out) < max_depth:
        cid = _cause_id(out[-1])
        if cid is None or cid in seen:
            break
        parent = await ctx.db.event(ctx.store, cid)
        if parent is None:
            break
        seen.add(cid)
        out.append(parent)
    out.reverse()
    return out


async def chain(req: ChainRequest, ctx: CausationCtx) -> EventsResponse:
    await _ready(ctx)
    return EventsResponse.from_rows(await _out(ctx, await _chain(ctx, req.event_id, req.max_depth), req.raw))


async def correlated(req: CorrelatedRequest, ctx: CausationCtx) -> EventsResponse:
    """Events whose ``metadata.correlation_id`` is the id, by time (``[]`` when none)."""
    await _ready(ctx)
    evs = await ctx.db.events(
        ctx.store, await ctx.db.correlated(ctx.store, req.correlation_id), correlated_with(req.correlation_id)
    )
    return EventsResponse.from_rows(await _out(ctx, _by_time(evs), req.raw))


# --- graphs ----------------------------------------------------------------------------------


async def _event_graph(ctx: CausationCtx, event_id: str, max_nodes: int) -> tuple[list[Event], bool]:
    """The event's root and everything it caused, breadth first."""
    root = (await _chain(ctx, event_id, 10_000))[0]
    nodes = {root["event_id"]: root}
    frontier = [root["event_id"]]
    while frontier:
        nxt: list[str] = []
        for eid in frontier:
            for ev in await ctx.db.events(ctx.store, await ctx.db.effects(ctx.store, eid), caused_by(eid)):
                if ev["event_id"] in nodes:
                    continue
                if len(nodes) >= max_nodes:
                    return list(nodes.values()), True
                nodes[ev["event_id"]] = ev
                nxt.append(ev["event_id"])
        frontier = nxt
    return list(nodes.values()), False


async def _correlation_graph(ctx: CausationCtx, correlation_id: str, max_nodes: int) -> tuple[list[Event], bool]:
    entries = await ctx.db.correlated(ctx.store, correlation_id)
    evs = _by_time(await ctx.db.events(ctx.store, entries, correlated_with(correlation_id)))
    if not evs:
        raise NotFoundError(
            f"no event with correlation_id {correlation_id!r}", details={"correlation_id": correlation_id}
        )
    return evs[:max_nodes], len(evs) > max_nodes


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(nodes: list[Event], edges: list[tuple[str, str]]) -> str:
    """Graphviz text: one box per event (type and a short id), one arrow per cause → effect."""
    lines = ["digraph causation {", "  rankdir=TB;", "  node [shape=box];"]
    for ev in nodes:
        eid = ev["event_id"]
        short = eid if len(eid) <= 12 else eid[:8] + "..."
        lines.append(f'  "{_label(eid)}" [label="{_label(ev["event_type"])}\\n{_label(short)}"];')
    for frm, to in edges:
        lines.append(f'  "{_label(frm)}" -> "{_label(to)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


async def graph(req: GraphRequest, ctx: CausationCtx) -> GraphResponse:
    await _ready(ctx)
    if req.event_id is not None:
        nodes, truncated = await _event_graph(ctx, req.event_id, req.max_nodes)
    elif req.correlation_id is not None:
        nodes, truncated = await _correlation_graph(ctx, req.correlation_id, req.max_nodes)
    else:
        assert req.id is not None
        if await ctx.db.lookup(ctx.store, req.id) is not None:
            nodes, truncated = await _event_graph(ctx, req.id, req.max_nodes)
        else:
            nodes, truncated = await _correlation_graph(ctx, req.id, req.max_nodes)
    nodes = _by_time(nodes)
    order = [ev["event_id"] for ev in nodes]
    index = {eid: i for i, eid in enumerate(order)}
    pairs = {(c, ev["event_id"]) for ev in nodes if (c := _cause_id(ev)) is not None and c in index}
    edges = sorted((p for p in pairs if p[0] != p[1]), key=lambda e: (index[e[1]], index[e[0]]))
    has_cause = {to for _, to in edges}
    has_effect = {frm for frm, _ in edges}
    nodes = await _out(ctx, nodes, req.raw)
    return GraphResponse(
        nodes=nodes,
        edges=[Edge(**{"from": f, "to": t}) for f, t in edges],
        roots=[i for i in order if i not in has_cause],
        leaves=[i for i in order if i not in has_effect],
        truncated=truncated,
        dot=to_dot(nodes, edges) if req.format == "dot" else None,
    )
