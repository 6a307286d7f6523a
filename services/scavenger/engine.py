"""What to remove and in which order: plan, archive, purge (docs/adr/0011-scavenging.md).

The order makes a scavenge safe to interrupt at any point (kill -9) and to run again:

1. **plan** from the stream's commits: the cutoff version is the smallest one every given
   criterion allows (``before``/``max_age`` through ``version_at``, ``before_version``,
   ``keep_versions``, the latest snapshot's version), rounded down to a commit boundary (a
   commit, one append, is removed whole or not at all), and never reaching the stream's last
   commit;
2. **archive** (when asked): the commits to remove are read and written as one object, under a
   key that depends only on what is removed, so a re-run writes the same object again;
3. **purge**: one ``STREAM.PURGE`` with a subject filter and a sequence removes every commit of
   the stream below the first one kept, atomically. A reader sees the events before or after,
   never a part of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.core.errors import GatewayError, NoSnapshotError, UnavailableError
from esdb_gater.shared.core.patterns import glob
from esdb_gater.shared.core.subjects import encode_token
from esdb_gater.shared.core.telemetry import emit
from esdb_gater.shared.log.eventlog import Commit
from esdb_gater.shared.models.scavenger import ScavengeOptions, ScavengeResult, ScavengeResults, Skipped

__all__ = ["DEFAULT_ARCHIVE_MAX_EVENTS", "Plan", "Scavenger", "archive_key", "pattern_regex"]

log = logging.getLogger(__name__)

DEFAULT_ARCHIVE_MAX_EVENTS: Final = 100_000


def pattern_regex(pattern: str) -> Any:
    """``*`` = any run of characters (also none); every other character is literal; anchored
    (an RE2 regex: use ``fullmatch``; linear time, shared/core/patterns.py)."""
    return glob(pattern)


def archive_key(stream_id: str, versions: tuple[int, int], first_position: int) -> str:
    """``<stream token>/<from>-<to>@<position of the first removed append>``: the same for a
    re-run of an interrupted scavenge, unique in the store (positions are never reused)."""
    return f"{encode_token(stream_id)}/{versions[0]}-{versions[1]}@{first_position}"


@dataclass(slots=True, frozen=True)
class Plan:
    stream_id: str
    head: Commit
    from_version: int
    to_version: int  # inclusive; < from_version when nothing is removed
    first_seq: int  # position of the first commit removed
    keep_seq: int  # position of the first commit kept: purge below it
    snapshot_version: int | None

    @property
    def count(self) -> int:
        return max(0, self.to_version - self.from_version + 1)


class Scavenger:
    def __init__(self, db: ScavengeStore, archive_max_events: int = DEFAULT_ARCHIVE_MAX_EVENTS) -> None:
        self.db = db
        self.archive_max_events = archive_max_events

    async def plan(self, store: str, stream_id: str, opts: ScavengeOptions) -> Plan:
        head = await self.db.head(store, stream_id)  # stream_not_found
        snapshot: int | None = None
        if opts.require_snapshot:
            snapshot = await self.db.latest_snapshot_version(store, stream_id)
            if snapshot is None:
                raise NoSnapshotError(
                    f"stream {stream_id!r} has no snapshot; record one or pass require_snapshot: false",
                    details={"stream_id": stream_id},
                )
        cutoff = head.last
        now_us = time.time_ns() // 1000
        if opts.before is not None:
            cutoff = min(cutoff, await self.db.version_at(store, stream_id, opts.before))
        if opts.max_age is not None:
            cutoff = min(cutoff, await self.db.version_at(store, stream_id, now_us - int(opts.max_age * 1e6)))
        if opts.before_version is not None:
            cutoff = min(cutoff, opts.before_version - 1)
        if opts.keep_versions is not None:
            cutoff = min(cutoff, head.last - opts.keep_versions)
        if snapshot is not None:
            cutoff = min(cutoff, snapshot)
        nothing = Plan(stream_id, head, 0, -1, 0, 0, snapshot)
        first = await self.db.first(store, stream_id)
        if first is None or first.seq >= head.seq or cutoff < first.last:
            return nothing  # nothing before the last commit, or the first commit must stay whole
        keep = head
        if cutoff + 1 <= head.last:
            pos = await self.db.position_of(store, stream_id, cutoff + 1)
            if pos is not None and pos < head.seq:
                keep = await self.db.commit_at(store, pos) or head
        if keep.first - 1 < first.first:
            return nothing
        return Plan(stream_id, head, first.first, keep.first - 1, first.seq, keep.seq, snapshot)

    def _result(self, plan: Plan, *, dry_run: bool, key: str | None = None, truncated: bool = False) -> ScavengeResult:
        count = plan.count
        return ScavengeResult(
            stream_id=plan.stream_id,
            deleted_count=count,
            deleted_versions=[plan.from_version, plan.to_version] if count else [0, 0],
            archived=key is not None,
            archive_key=key,
            dry_run=dry_run,
            snapshot_version=plan.snapshot_version,
            truncated=truncated,
        )

    async def dry_run(self, store: str, stream_id: str, opts: ScavengeOptions) -> ScavengeResult:
        return self._result(await self.plan(store, stream_id, opts), dry_run=True)

    async def scavenge(self, store: str, stream_id: str, opts: ScavengeOptions) -> ScavengeResult:
        started = time.perf_counter()
        plan = await self.plan(store, stream_id, opts)
        if plan.count == 0:
            return self._result(plan, dry_run=False)
        key: str | None = None
        truncated = False
        if opts.archive:
            plan, events, truncated = await self._verified(store, plan)
            if not events:  # removed meanwhile by another scavenge
                return self._result(Plan(stream_id, plan.head, 0, -1, 0, 0, plan.snapshot_version), dry_run=False)
            key = archive_key(stream_id, (plan.from_version, plan.to_version), plan.first_seq)
            await self.db.write_archive(store, key, stream_id, (plan.from_version, plan.to_version), events)
        await self.db.purge_below(store, stream_id, plan.keep_seq)
        emit(
            ("scavenge", "complete"),
            {"duration": int((time.perf_counter() - started) * 1e6), "deleted_count": plan.count},
            {"store_id": store, "stream_id": stream_id, "archived": key is not None},
        )
        log.info("scavenged %s/%s: versions %d..%d", store, stream_id, plan.from_version, plan.to_version)
        return self._result(plan, dry_run=False, key=key, truncated=truncated)

    async def _verified(self, store: str, plan: Plan) -> tuple[Plan, list[dict[str, Any]], bool]:
        """``_bounded``, checked against the plan before anything is purged (ADR 0017): the
        archive holds every version from the plan's first to its last (or to the commit where
        ``archive_max_events`` cut it), contiguous, starting at the plan's first commit (or at
        the stream's first commit now, when another scavenge removed the earlier ones). On a
        replicated store a read that fails the check (a lagging follower answered the batched
        Direct Get) is read again from the stream leader; still short, the scavenge stops with
        ``unavailable`` (retryable) and purges nothing."""
        leader = False
        while True:
            narrowed, events, truncated, next_first = await self._bounded(store, plan, leader=leader)
            problem = await self._check(store, plan, events, truncated, next_first) if events else None
            if problem is None:
                return narrowed, events, truncated
            if leader or await self.db.replicas(store) <= 1:
                log.warning("not scavenging %s/%s: %s", store, plan.stream_id, problem)
                raise UnavailableError(
                    f"the archive read of {plan.stream_id!r} does not match the plan; nothing was removed, try again",
                    details={
                        "stream_id": plan.stream_id,
                        "reason": problem,
                        "planned": {
                            "from_version": plan.from_version,
                            "to_version": plan.to_version,
                            "first_position": plan.first_seq,
                            "keep_position": plan.keep_seq,
                            "count": plan.count,
                        },
                        "archived": {
                            "from_version": int(events[0]["version"]),
                            "to_version": int(events[-1]["version"]),
                            "first_position": int(events[0]["position"]),
                            "last_position": int(events[-1]["position"]),
                            "count": len(events),
                        },
                        "read_from_leader": leader,
                    },
                )
            leader = True

    async def _check(
        self, store: str, plan: Plan, events: list[dict[str, Any]], truncated: bool, next_first: int | None
    ) -> str | None:
        """Why ``events`` are not the archive of ``plan``; None when they are."""
        first_v = int(events[0]["version"])
        for i, ev in enumerate(events):
            if int(ev["version"]) != first_v + i:
                return f"versions jump from {first_v + i - 1} to {ev['version']} at position {ev['position']}"
        last_v = first_v + len(events) - 1
        if truncated:
            if next_first != last_v + 1:
                return f"the archive ends at version {last_v} but the next commit starts at {next_first}"
        elif last_v != plan.to_version:
            return f"the archive ends at version {last_v}, the plan at {plan.to_version}"
        if int(events[0]["position"]) != plan.first_seq or first_v != plan.from_version:
            # another scavenge may have removed the first commits since the plan: the stream
            # must now start exactly where the archive does
            now = await self.db.first(store, plan.stream_id)
            if now is None or now.seq != int(events[0]["position"]) or now.first != first_v:
                return (
                    f"the archive starts at version {first_v} (position {events[0]['position']}), "
                    f"the plan at {plan.from_version} (position {plan.first_seq})"
                )
        return None

    async def _bounded(
        self, store: str, plan: Plan, *, leader: bool = False
    ) -> tuple[Plan, list[dict[str, Any]], bool, int | None]:
        """The events to archive: whole commits, at most ``archive_max_events`` (at least one
        commit), the plan narrowed to them (the log may also have lost commits since the
        plan was made, to another scavenge), and the first version of the first commit left
        out when the bound cut the archive."""
        commits = await self.db.commits(store, plan.stream_id, plan.first_seq, plan.keep_seq, leader=leader)
        events: list[dict[str, Any]] = []
        keep_seq = plan.keep_seq
        truncated = False
        next_first: int | None = None
        for sm in commits:
            rows = self.db.events_of([sm], plan.stream_id)
            if events and len(events) + len(rows) > self.archive_max_events:
                keep_seq, truncated = sm.seq, True
                next_first = int(rows[0]["version"]) if rows else None
                break
            events.extend(rows)
        if not events:
            return plan, events, False, None
        narrowed = Plan(
            plan.stream_id,
            plan.head,
            int(events[0]["version"]),
            int(events[-1]["version"]),
            int(events[0]["position"]),
            keep_seq,
            plan.snapshot_version,
        )
        return narrowed, events, truncated, next_first

    async def scavenge_matching(
        self, store: str, pattern: str, opts: ScavengeOptions, *, dry_run: bool = False
    ) -> ScavengeResults:
        rx = pattern_regex(pattern)
        results: list[ScavengeResult] = []
        skipped: list[Skipped] = []
        for stream_id in await self.db.stream_ids(store):
            if rx.fullmatch(stream_id) is None:
                continue
            try:
                if dry_run:
                    results.append(await self.dry_run(store, stream_id, opts))
                else:
                    results.append(await self.scavenge(store, stream_id, opts))
            except GatewayError as exc:
                if exc.retryable:
                    raise
                skipped.append(Skipped(stream_id=stream_id, code=exc.code.value, message=exc.message))
        return ScavengeResults(results=results, skipped=skipped)
