"""The scavenger service's ops (seed names; docs/api/scavenger.md): scavenging and retention policies."""

from __future__ import annotations

from typing import Any

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.models.scavenger import ArchiveReadResponse, Policy, ScavengeResult, ScavengeResults

__all__ = ["ScavengerMethods"]


class ScavengerMethods(Transport):
    async def scavenge(
        self, store: str, stream_id: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResult:
        """``scavenge(store, stream, opts)``: ``before``, ``before_version``, ``max_age``,
        ``keep_versions``, ``require_snapshot`` (default true), ``archive``."""
        body = {**(opts or {}), **kw, "stream_id": stream_id}
        return ScavengeResult.model_validate(await self.request(store, "scavenger", "scavenge", body))

    async def scavenge_matching(
        self, store: str, pattern: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResults:
        """Every stream whose id matches ``pattern`` (``*`` = any run of characters)."""
        body = {**(opts or {}), **kw, "pattern": pattern}
        return ScavengeResults.model_validate(await self.request(store, "scavenger", "scavenge_matching", body))

    async def scavenge_dry_run(
        self, store: str, stream_id: str, opts: dict[str, Any] | None = None, **kw: Any
    ) -> ScavengeResult:
        body = {**(opts or {}), **kw, "stream_id": stream_id}
        return ScavengeResult.model_validate(await self.request(store, "scavenger", "dry_run", body))

    async def archive_read(self, store: str, archive_key: str) -> ArchiveReadResponse:
        reply = await self.request(store, "scavenger", "archive_read", {"archive_key": archive_key})
        return ArchiveReadResponse.model_validate(reply)

    async def set_retention_policy(self, store: str, pattern: str, **opts: Any) -> Policy:
        """``name`` (default: the pattern), ``max_age``, ``keep_versions``, ``require_snapshot``,
        ``archive``, ``interval_s``."""
        reply = await self.request(store, "scavenger", "policy_set", {**opts, "pattern": pattern})
        return Policy.model_validate(reply)

    async def get_retention_policy(self, store: str, name: str) -> Policy:
        return Policy.model_validate(await self.request(store, "scavenger", "policy_get", {"name": name}))

    async def list_retention_policies(self, store: str) -> list[Policy]:
        reply = await self.request(store, "scavenger", "policy_list", {})
        return [Policy.model_validate(p) for p in reply["policies"]]

    async def delete_retention_policy(self, store: str, name: str) -> None:
        await self.request(store, "scavenger", "policy_delete", {"name": name})
