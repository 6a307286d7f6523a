"""One async function per subject of the scavenger service. No bytes, headers or JetStream here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.models.scavenger import (
    ArchiveReadRequest,
    ArchiveReadResponse,
    DryRunRequest,
    PoliciesResponse,
    Policy,
    PolicyListRequest,
    PolicyNameRequest,
    PolicySetRequest,
    ScavengeMatchingRequest,
    ScavengeOptions,
    ScavengeRequest,
    ScavengeResult,
    ScavengeResults,
)

__all__ = [
    "ScavengerCtx",
    "archive_read",
    "dry_run",
    "policy_delete",
    "policy_get",
    "policy_list",
    "policy_set",
    "scavenge",
    "scavenge_matching",
]


@dataclass(frozen=True, slots=True)
class ScavengerCtx:
    store: str
    db: ScavengeStore
    engine: Scavenger


def _options(req: ScavengeOptions) -> ScavengeOptions:
    return ScavengeOptions.model_validate(req.model_dump(include=set(ScavengeOptions.model_fields)))


async def scavenge(req: ScavengeRequest, ctx: ScavengerCtx) -> ScavengeResult:
    return await ctx.engine.scavenge(ctx.store, req.stream_id, _options(req))


async def dry_run(req: DryRunRequest, ctx: ScavengerCtx) -> ScavengeResult:
    return await ctx.engine.dry_run(ctx.store, req.stream_id, _options(req))


async def scavenge_matching(req: ScavengeMatchingRequest, ctx: ScavengerCtx) -> ScavengeResults:
    await ctx.db.ensure_store(ctx.store)
    return await ctx.engine.scavenge_matching(ctx.store, req.pattern, _options(req))


async def archive_read(req: ArchiveReadRequest, ctx: ScavengerCtx) -> ArchiveReadResponse:
    doc = await ctx.db.read_archive(ctx.store, req.archive_key)
    return ArchiveReadResponse(
        events=doc["events"],
        stream_id=doc["stream_id"],
        deleted_versions=list(doc["deleted_versions"]),
        created_at=int(doc["created_at"]),
    )


def _policy(doc: dict[str, Any]) -> Policy:
    return Policy.model_validate(
        {
            "runs": 0,
            "total_deleted": 0,
            "last_run": None,
            **{k: v for k, v in doc.items() if k in Policy.model_fields},
        }
    )


async def policy_set(req: PolicySetRequest, ctx: ScavengerCtx) -> Policy:
    """Create or replace a policy; its run history (runs, last_run) is kept on replace."""
    await ctx.db.ensure_store(ctx.store)
    fields: dict[str, Any] = req.model_dump(mode="json")
    fields["name"] = req.name or req.pattern
    return _policy(await ctx.db.upsert_policy(ctx.store, fields))


async def policy_get(req: PolicyNameRequest, ctx: ScavengerCtx) -> Policy:
    await ctx.db.ensure_store(ctx.store)
    doc, _ = await ctx.db.get_policy(ctx.store, req.name)
    return _policy(doc)


async def policy_list(req: PolicyListRequest, ctx: ScavengerCtx) -> PoliciesResponse:
    await ctx.db.ensure_store(ctx.store)
    docs = sorted((doc for _, doc, _ in await ctx.db.policies(ctx.store)), key=lambda d: str(d["name"]))
    return PoliciesResponse(policies=[_policy(d) for d in docs])


async def policy_delete(req: PolicyNameRequest, ctx: ScavengerCtx) -> OkResponse:
    """Remove a policy; ``not_found`` when there is none."""
    await ctx.db.ensure_store(ctx.store)
    await ctx.db.get_policy(ctx.store, req.name)
    await ctx.db.delete_policy(ctx.store, req.name)
    return OkResponse()
