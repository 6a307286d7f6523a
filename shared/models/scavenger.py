"""Wire models of the scavenger service (``<prefix>.api.<store>.scavenger.<op>``), SPEC.md §7.

Field names are the seed's options: ``scavenge(store, stream, opts)``,
``scavenge_matching(store, pattern, opts)``, ``scavenge_dry_run(store, stream, opts)`` with
``before`` (epoch_us), ``before_version``, ``max_age`` (seconds), ``keep_versions``,
``require_snapshot`` (default true) and ``archive`` (docs/api/scavenger.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from esdb_gater.shared.models.common import Request, Response, StreamId

__all__ = [
    "ArchiveReadRequest",
    "ArchiveReadResponse",
    "DryRunRequest",
    "PoliciesResponse",
    "Policy",
    "PolicyListRequest",
    "PolicyNameRequest",
    "PolicyRun",
    "PolicySetRequest",
    "ScavengeMatchingRequest",
    "ScavengeOptions",
    "ScavengeRequest",
    "ScavengeResult",
    "ScavengeResults",
    "Skipped",
]

_CRITERIA = ("before", "before_version", "max_age", "keep_versions")
_MAX_INT = 2**63 - 1
_MAX_AGE_S = 1e12  # ~31 700 years


class ScavengeOptions(Request):
    """What may be removed. An event is removed only when every given criterion allows it."""

    before: int | None = Field(
        default=None, ge=0, le=_MAX_INT, description="epoch_us: events with epoch_us <= before may go (like version_at)"
    )
    before_version: int | None = Field(default=None, ge=0, le=_MAX_INT, description="versions < before_version may go")
    max_age: float | None = Field(
        default=None, ge=0, le=_MAX_AGE_S, description="seconds: events older than this may go"
    )
    keep_versions: int | None = Field(
        default=None, ge=0, le=_MAX_INT, description="always keep the newest N events (alone: remove all older ones)"
    )
    require_snapshot: bool = Field(
        default=True,
        description="refuse (no_snapshot) unless the stream has a snapshot, and never remove past the "
        "latest snapshot's version",
    )
    archive: bool = Field(default=False, description="write the removed events to the Object Store first")

    @model_validator(mode="after")
    def _some_criterion(self) -> ScavengeOptions:
        if all(getattr(self, k) is None for k in _CRITERIA):
            raise ValueError("give at least one of before, before_version, max_age, keep_versions")
        return self


class ScavengeRequest(ScavengeOptions):
    stream_id: StreamId


class DryRunRequest(ScavengeRequest):
    """The same report as ``scavenge``; nothing is removed or archived."""


class ScavengeMatchingRequest(ScavengeOptions):
    pattern: str = Field(
        min_length=1, max_length=256, description="stream-id pattern: * is any run of characters, the rest literal"
    )


class ScavengeResult(Response):
    """One stream's report (also what a dry run returns)."""

    stream_id: str
    deleted_count: int
    deleted_versions: list[int] = Field(
        description="[from, to], inclusive; [0, 0] when deleted_count is 0", min_length=2, max_length=2
    )
    archived: bool
    archive_key: str | None
    dry_run: bool = False
    snapshot_version: int | None = Field(default=None, description="the latest snapshot's version, when required")
    truncated: bool = Field(
        default=False, description="an archiving scavenge stopped at its size limit; run it again for the rest"
    )


class Skipped(BaseModel):
    stream_id: str
    code: str = Field(description="the error code that stream was refused with, e.g. no_snapshot")
    message: str


class ScavengeResults(Response):
    results: list[ScavengeResult] = Field(description="the streams scavenged (also those with nothing to remove)")
    skipped: list[Skipped] = Field(default_factory=list, description="matching streams refused, with the reason")


class ArchiveReadRequest(Request):
    archive_key: str = Field(min_length=1, max_length=2048)


class ArchiveReadResponse(Response):
    events: list[dict[str, Any]] = Field(description="the removed events, exactly as reads returned them")
    stream_id: str
    deleted_versions: list[int]
    created_at: int = Field(description="ms since epoch")

    def to_wire(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "stream_id": self.stream_id,
            "deleted_versions": self.deleted_versions,
            "created_at": self.created_at,
        }


# --- retention policies ---------------------------------------------------------------------------


class PolicySetRequest(Request):
    """A retention policy: scavenge the streams matching ``pattern`` every ``interval_s``."""

    name: str | None = Field(default=None, min_length=1, max_length=256, description="default: the pattern")
    pattern: str = Field(min_length=1, max_length=256)
    max_age: float | None = Field(default=None, ge=0, le=_MAX_AGE_S)
    keep_versions: int | None = Field(default=None, ge=0, le=_MAX_INT)
    require_snapshot: bool = True
    archive: bool = False
    interval_s: float = Field(default=3600.0, ge=1, le=30 * 86400, description="seconds between runs")

    @model_validator(mode="after")
    def _criterion(self) -> PolicySetRequest:
        if self.max_age is None and self.keep_versions is None:
            raise ValueError("give max_age and/or keep_versions")
        return self


class PolicyNameRequest(Request):
    name: str = Field(min_length=1, max_length=256)


class PolicyListRequest(Request):
    pass


class PolicyRun(BaseModel):
    started_at: int = Field(description="ms since epoch")
    finished_at: int | None
    deleted_count: int
    results: list[ScavengeResult] = Field(description="streams where events were removed")
    skipped: list[Skipped]
    by: str = Field(description="the scavenger instance that ran it")


class Policy(Response):
    name: str
    pattern: str
    max_age: float | None
    keep_versions: int | None
    require_snapshot: bool
    archive: bool
    interval_s: float
    created_at: int
    updated_at: int
    runs: int = Field(description="completed runs")
    total_deleted: int = Field(description="events removed by every run so far")
    last_run: PolicyRun | None


class PoliciesResponse(Response):
    policies: list[Policy]
