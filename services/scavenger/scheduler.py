"""Retention policies on a schedule, in exactly one scavenger instance at a time.

Every instance runs a ``Scheduler``; the one holding the lease ``lease.scheduler`` (KV bucket
``<prefix>-scavenger``, shared/log/lease.py) runs the policies that are due. Each run is also
claimed on the policy itself (compare-and-set of ``last_run`` on the entry's revision), so even
while a lease changes hands no policy slot runs twice. A run's report (what was removed, what
was refused and why) is written back to the policy (``policy_get``) and emitted as telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError

from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.core.errors import NotFoundError
from esdb_gater.shared.core.telemetry import emit
from esdb_gater.shared.log.lease import Lease
from esdb_gater.shared.models.scavenger import ScavengeOptions

__all__ = ["Scheduler", "due"]

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def due(doc: dict[str, Any], now_ms: int) -> bool:
    last = doc.get("last_run")
    return last is None or now_ms - int(last["started_at"]) >= float(doc["interval_s"]) * 1000


class Scheduler:
    def __init__(self, db: ScavengeStore, engine: Scavenger, owner: str, lease_ttl_s: float = 5.0) -> None:
        self.db = db
        self.engine = engine
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s
        self.tick_s = min(1.0, lease_ttl_s / 4)
        self.lease = Lease(db.kv, db.scheduler_lease_key(), owner, lease_ttl_s)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="scavenger-lease"),
            asyncio.create_task(self._run(), name="scavenger-scheduler"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.lease.release()

    async def _keep_lease(self) -> None:
        while True:
            try:
                await self.lease.acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.lease.held = False
                log.warning("scavenger scheduler: lease renewal failed", exc_info=True)
            await asyncio.sleep(self.lease_ttl_s / 4)

    async def _run(self) -> None:
        while True:
            try:
                if self.lease.held:
                    await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("scavenger scheduler: a round failed", exc_info=True)
            await asyncio.sleep(self.tick_s)

    async def run_due(self) -> int:
        """Run every due policy (while this instance holds the lease); returns how many ran."""
        ran = 0
        for store, doc, rev in await self.db.policies():
            if not self.lease.held:
                break
            now = _now_ms()
            if not due(doc, now):
                continue
            claim = dict(doc)
            claim["last_run"] = {
                "started_at": now,
                "finished_at": None,
                "deleted_count": 0,
                "results": [],
                "skipped": [],
                "by": self.owner,
            }
            try:
                await self.db.put_policy(store, claim, last=rev)
            except KeyWrongLastSequenceError:
                continue  # changed or claimed meanwhile
            await self._run_policy(store, claim)
            ran += 1
        return ran

    async def _run_policy(self, store: str, doc: dict[str, Any]) -> None:
        started = doc["last_run"]["started_at"]
        opts = ScavengeOptions(
            max_age=doc.get("max_age"),
            keep_versions=doc.get("keep_versions"),
            require_snapshot=bool(doc.get("require_snapshot", True)),
            archive=bool(doc.get("archive", False)),
        )
        try:
            report = await self.engine.scavenge_matching(store, doc["pattern"], opts)
            results = [r.model_dump(mode="json") for r in report.results if r.deleted_count > 0]
            skipped = [s.model_dump(mode="json") for s in report.skipped]
        except Exception as exc:  # the store went away, a service is down: report it, try next time
            log.warning("retention policy %s of store %s failed", doc["name"], store, exc_info=True)
            results = []
            skipped = [
                {
                    "stream_id": "*",
                    "code": getattr(getattr(exc, "code", None), "value", "internal"),
                    "message": str(exc)[:200],
                }
            ]
        deleted = sum(int(r["deleted_count"]) for r in results)
        run = {
            "started_at": started,
            "finished_at": _now_ms(),
            "deleted_count": deleted,
            "results": results[:100],
            "skipped": skipped[:100],
            "by": self.owner,
        }
        for _ in range(20):  # write the report on the current entry (policy_set may have changed it)
            try:
                current, rev = await self.db.get_policy(store, doc["name"])
            except NotFoundError:
                return
            current["last_run"] = run
            current["runs"] = int(current.get("runs", 0)) + 1
            current["total_deleted"] = int(current.get("total_deleted", 0)) + deleted
            try:
                await self.db.put_policy(store, current, last=rev)
                break
            except KeyWrongLastSequenceError:
                continue
        emit(
            ("scavenger", "policy_run"),
            {"deleted_count": deleted, "streams": len(results), "skipped": len(skipped)},
            {"store_id": store, "policy": doc["name"]},
        )
        log.info("retention policy %s of store %s removed %d events", doc["name"], store, deleted)
