"""The scavenger over the wire (SPEC.md §7, issue 7): what is removed, what stays right afterwards
(version, appends, reads, temporal ops), archives, snapshots, re-runs after a crash, policies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import (
    InvalidRequestError,
    NoSnapshotError,
    NotFoundError,
    StoreNotFoundError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.core.telemetry import attach, detach
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models.scavenger import ScavengeOptions
from tests.conftest import Wire

pytestmark = pytest.mark.timeout(60)


def ev(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_type": "E", "data": {"i": i}, **extra}


async def fill(c: GaterClient, store: str, stream: str, sizes: list[int], pause: float = 0.0) -> list[int]:
    """One append per size (its events numbered on); returns each append's first version."""
    firsts = []
    n = 0
    for size in sizes:
        firsts.append(n)
        await c.append_events(store, stream, [ev(n + k) for k in range(size)])
        n += size
        if pause:
            await asyncio.sleep(pause)
    return firsts


async def snapshot(c: GaterClient, store: str, stream: str, version: int, source: str = "agg") -> None:
    await c.request(
        store, "snapshot", "record", {"source_uuid": source, "stream_uuid": stream, "version": version, "record": {}}
    )


async def read_all(wire: Wire, store: str, stream: str) -> list[dict[str, Any]]:
    body = {"stream_id": stream, "start_version": 0, "count": 10_000, "raw": True}
    return (await wire.call(store, "read", body)).ok()["events"]  # type: ignore[no-any-return]


# --- what stays right --------------------------------------------------------------------------------


async def test_after_a_scavenge_version_appends_reads_and_temporal_ops_stay_right(
    client: GaterClient, wire: Wire, store: str, stream_id: str
) -> None:
    await fill(client, store, stream_id, [1, 3, 1, 2, 1, 1, 3, 1, 1], pause=0.005)  # versions 0..13
    before = await read_all(wire, store, stream_id)
    await snapshot(client, store, stream_id, 12)
    # commits: 0 | 1-3 | 4 | 5-6 | 7 | 8 | 9-11 | 12 | 13; keep 4 → cutoff 9, inside 9-11
    res = await client.scavenge(store, stream_id, keep_versions=4)
    assert (res.deleted_count, res.deleted_versions, res.archived, res.snapshot_version) == (9, [0, 8], False, 12)
    assert await client.get_version(store, stream_id) == 13
    assert await client.stream_exists(store, stream_id)
    after = await read_all(wire, store, stream_id)
    assert after == before[9:]  # versions unchanged, the commit 9-11 kept whole
    back = await client.stream_backward(store, stream_id, -1, 100)
    assert [e.version for e in back] == list(range(13, 8, -1))
    assert [e.version for e in await client.stream_forward(store, stream_id, 10, 2)] == [10, 11]
    assert await client.stream_forward(store, stream_id, 2, 3) == []  # removed versions read as nothing
    # temporal ops over what remains
    t9, t13 = before[9]["epoch_us"], before[13]["epoch_us"]
    assert await client.version_at(store, stream_id, t13) == 13
    assert await client.version_at(store, stream_id, t9) == 11  # the commit 9-11 shares one time
    assert [e.version for e in await client.read_until(store, stream_id, t9)] == [9, 10, 11]
    assert [e.version for e in await client.read_range(store, stream_id, t9, t13)] == list(range(9, 14))
    # appends carry on with the right expected version, and only with it
    r = await client.append_events(store, stream_id, 13, [ev(14)])
    assert r.version == 14
    with pytest.raises(WrongExpectedVersionError):
        await client.append_events(store, stream_id, 13, [ev(15)])
    # running it again removes nothing more (same criteria, the snapshot bounds it)
    again = await client.scavenge(store, stream_id, keep_versions=4)
    assert (again.deleted_count, again.deleted_versions) == (0, [0, 0])


async def test_the_last_commit_is_never_removed_and_commits_go_whole(
    client: GaterClient, store: str, stream_id: str
) -> None:
    await fill(client, store, stream_id, [2, 3, 2])  # versions 0-1, 2-4, 5-6
    res = await client.scavenge(store, stream_id, keep_versions=0, require_snapshot=False)
    assert (res.deleted_count, res.deleted_versions) == (5, [0, 4])
    assert [e.version for e in await client.stream_forward(store, stream_id, 0, 10)] == [5, 6]
    assert await client.get_version(store, stream_id) == 6
    # before_version inside a commit keeps that commit
    await fill(client, store, stream_id, [3, 1])  # versions 7-9, 10
    res = await client.scavenge(store, stream_id, before_version=9, require_snapshot=False)
    assert (res.deleted_count, res.deleted_versions) == (2, [5, 6])
    assert [e.version for e in await client.stream_forward(store, stream_id, 0, 100)] == [7, 8, 9, 10]


async def test_criteria_combine(client: GaterClient, wire: Wire, store: str, stream_id: str) -> None:
    await fill(client, store, stream_id, [1] * 10, pause=0.005)
    events = await read_all(wire, store, stream_id)
    opts: dict[str, Any] = {"require_snapshot": False}
    # before (inclusive, like version_at) and keep_versions: the stricter wins
    dry = await client.scavenge_dry_run(store, stream_id, before=events[6]["epoch_us"], keep_versions=5, **opts)
    assert (dry.deleted_count, dry.deleted_versions, dry.dry_run) == (5, [0, 4], True)
    dry = await client.scavenge_dry_run(store, stream_id, before=events[2]["epoch_us"], keep_versions=5, **opts)
    assert dry.deleted_versions == [0, 2]
    dry = await client.scavenge_dry_run(store, stream_id, before_version=4, **opts)
    assert dry.deleted_versions == [0, 3]
    assert (await client.scavenge_dry_run(store, stream_id, max_age=3600, **opts)).deleted_count == 0
    assert (await client.scavenge_dry_run(store, stream_id, max_age=0, **opts)).deleted_versions == [0, 8]
    assert (await client.scavenge_dry_run(store, stream_id, before=0, **opts)).deleted_count == 0
    # a dry run removes nothing
    assert await read_all(wire, store, stream_id) == events


# --- snapshots ---------------------------------------------------------------------------------------


async def test_require_snapshot(client: GaterClient, store: str, stream_id: str) -> None:
    await fill(client, store, stream_id, [1] * 8)
    await snapshot(client, store, "another-stream", 7)
    with pytest.raises(NoSnapshotError):
        await client.scavenge(store, stream_id, keep_versions=0)
    with pytest.raises(NoSnapshotError):
        await client.scavenge_dry_run(store, stream_id, keep_versions=0)
    assert await client.get_version(store, stream_id) == 7
    assert len(await client.stream_forward(store, stream_id, 0, 10)) == 8
    await snapshot(client, store, stream_id, 2, source="projection-a")
    await snapshot(client, store, stream_id, 4, source="projection-b")  # any source counts; the latest bounds
    res = await client.scavenge(store, stream_id, keep_versions=0)
    assert (res.deleted_versions, res.snapshot_version) == ([0, 4], 4)
    assert [e.version for e in await client.stream_forward(store, stream_id, 0, 10)] == [5, 6, 7]


# --- archives ------------------------------------------------------------------------------------------


async def test_archive_reads_back_exactly(client: GaterClient, wire: Wire, store: str, stream_id: str) -> None:
    await client.append_events(store, stream_id, [ev(0, metadata={"causation_id": "x", "n": [1, {"a": None}]})])
    await client.append_events(
        store,
        stream_id,
        [
            {"event_type": "Blob", "data": bytes(range(256)), "data_content_type": "application/octet-stream"},
            ev(2, tags=["t", "ü"]),
        ],
    )
    await client.append_events(store, stream_id, [ev(3)])
    before = await read_all(wire, store, stream_id)
    res = await client.scavenge(store, stream_id, keep_versions=1, require_snapshot=False, archive=True)
    assert (res.deleted_count, res.archived) == (3, True)
    assert res.archive_key is not None
    reply = (await wire.call(store, "archive_read", {"archive_key": res.archive_key}, service="scavenger")).ok()
    assert reply["events"] == before[:3]  # the same JSON a read gave (bytes as base64)
    assert (reply["stream_id"], reply["deleted_versions"]) == (stream_id, [0, 2])
    packed = await wire.call(
        store, "archive_read", {"archive_key": res.archive_key}, service="scavenger", codec="msgpack"
    )
    assert packed.ok()["events"][1]["data"] == bytes(range(256))  # msgpack: bytes stay bytes
    archived = await client.archive_read(store, res.archive_key)
    assert [e["version"] for e in archived.events] == [0, 1, 2]
    with pytest.raises(NotFoundError):
        await client.archive_read(store, "no/such-key")
    await client.append_events(store + "b", stream_id, [ev(0)])
    with pytest.raises(NotFoundError):
        await client.archive_read(store + "b", "no/such-key")  # a store without archives


async def test_an_interrupted_scavenge_hides_nothing_and_can_run_again(
    services: Any, nc: Client, client: GaterClient, wire: Wire, store: str, stream_id: str
) -> None:
    """Killed after the archive was written and before the purge (the only window with two
    steps): readers still see every event, and running it again gives the same archive and
    removes the events. The purge itself is one atomic JetStream request."""
    await fill(client, store, stream_id, [2, 2, 2])
    before = await read_all(wire, store, stream_id)

    class CrashError(Exception):
        pass

    class Dying(ScavengeStore):
        async def purge_below(self, store: str, stream_id: str, seq: int) -> int:
            raise CrashError

    settings = Settings()
    log = Log(nc)
    await log.start()
    try:
        dying = Dying(nc, log, Subjects(), settings)
        await dying.open()
        opts = ScavengeOptions(keep_versions=2, require_snapshot=False, archive=True)
        with pytest.raises(CrashError):
            await Scavenger(dying).scavenge(store, stream_id, opts)
        assert await read_all(wire, store, stream_id) == before
        res = await client.scavenge(store, stream_id, keep_versions=2, require_snapshot=False, archive=True)
        assert (res.deleted_versions, res.archive_key) == ([0, 3], f"{stream_id}/0-3@{before[0]['position']}")
        assert await read_all(wire, store, stream_id) == before[4:]
        archived = (await wire.call(store, "archive_read", {"archive_key": res.archive_key}, service="scavenger")).ok()
        assert archived["events"] == before[:4]
    finally:
        await log.stop()


async def test_an_archive_stops_at_its_size_limit_and_the_next_run_takes_the_rest(
    services: Any, nc: Client, client: GaterClient, wire: Wire, store: str, stream_id: str
) -> None:
    await fill(client, store, stream_id, [2, 2, 2, 1])
    before = await read_all(wire, store, stream_id)
    log = Log(nc)
    await log.start()
    try:
        db = ScavengeStore(nc, log, Subjects(), Settings())
        await db.open()
        engine = Scavenger(db, archive_max_events=3)
        opts = ScavengeOptions(keep_versions=0, require_snapshot=False, archive=True)
        first = await engine.scavenge(store, stream_id, opts)
        assert (first.deleted_versions, first.truncated, first.archived) == ([0, 1], True, True)
        second = await engine.scavenge(store, stream_id, opts)
        assert (second.deleted_versions, second.truncated) == ([2, 3], True)
        third = await engine.scavenge(store, stream_id, opts)
        assert (third.deleted_versions, third.truncated) == ([4, 5], False)
        assert await read_all(wire, store, stream_id) == before[6:]
        archived = []
        for r in (first, second, third):
            assert r.archive_key is not None
            archived += (await client.archive_read(store, r.archive_key)).events
        assert [e["event_id"] for e in archived] == [e["event_id"] for e in before[:6]]
    finally:
        await log.stop()


# --- many streams, errors --------------------------------------------------------------------------------


async def test_scavenge_matching_reports_each_stream(client: GaterClient, store: str) -> None:
    for s in ("orders-1", "orders-2", "users-1"):
        await fill(client, store, s, [1, 1, 1])
    await snapshot(client, store, "orders-1", 1)
    res = await client.scavenge_matching(store, "orders-*", keep_versions=0)
    assert [(r.stream_id, r.deleted_versions) for r in res.results] == [("orders-1", [0, 1])]
    assert [(s.stream_id, s.code) for s in res.skipped] == [("orders-2", "no_snapshot")]
    res = await client.scavenge_matching(store, "*-1", keep_versions=1, require_snapshot=False)
    assert sorted((r.stream_id, r.deleted_count) for r in res.results) == [("orders-1", 0), ("users-1", 2)]
    assert await client.get_version(store, "users-1") == 2


@pytest.mark.parametrize(
    "body",
    [
        {"stream_id": "s"},  # no criterion
        {"stream_id": "s", "keep_versions": -1},
        {"stream_id": "s", "before": "yesterday"},
        {"stream_id": "", "keep_versions": 1},
        {"stream_id": "s", "keep_versions": 1, "bogus": True},
    ],
)
async def test_bad_requests_are_invalid_requests(wire: Wire, store: str, body: dict[str, Any]) -> None:
    details = (await wire.call(store, "scavenge", body, service="scavenger")).error("invalid_request")
    assert details["field"]


async def test_missing_stream_and_store(client: GaterClient, store: str, stream_id: str) -> None:
    await client.append_events(store, "other", [ev(0)])
    with pytest.raises(StreamNotFoundError):
        await client.scavenge(store, stream_id, keep_versions=0, require_snapshot=False)
    with pytest.raises(StoreNotFoundError):
        await client.scavenge("never" + store, stream_id, keep_versions=0)


# --- retention policies ------------------------------------------------------------------------------------


async def test_policies_run_on_schedule_and_report(client: GaterClient, store: str) -> None:
    seen: list[tuple[Any, ...]] = []

    def on_event(event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        if event == ("scavenger", "policy_run") and metadata.get("store_id") == store:
            seen.append((metadata["policy"], measurements["deleted_count"]))

    assert attach(f"policy-{store}", on_event)  # the session's services run in this process
    for s in ("log-a", "log-b", "keep"):
        await fill(client, store, s, [1, 1, 1, 1])
    p = await client.set_retention_policy(store, "log-*", keep_versions=1, require_snapshot=False, interval_s=1)
    assert (p.name, p.pattern, p.keep_versions, p.runs, p.last_run) == ("log-*", "log-*", 1, 0, None)
    await client.set_retention_policy(store, "x*", name="strict", max_age=3600)  # needs snapshots: refused
    assert [x.name for x in await client.list_retention_policies(store)] == ["log-*", "strict"]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = await client.get_retention_policy(store, "log-*")
            if got.runs >= 1 and got.last_run is not None and got.last_run.finished_at and seen:
                break
            await asyncio.sleep(0.1)
        assert got.last_run is not None
        assert got.total_deleted == 6 and got.last_run.by
        assert sorted((r.stream_id, r.deleted_versions) for r in got.last_run.results) == [
            ("log-a", [0, 2]),
            ("log-b", [0, 2]),
        ]
        assert len(await client.stream_forward(store, "keep", 0, 10)) == 4
    finally:
        assert detach(f"policy-{store}")
    assert ("log-*", 6) in seen  # the run's report as telemetry too
    # replacing keeps the history; deleting removes it
    p2 = await client.set_retention_policy(store, "log-*", keep_versions=2, require_snapshot=False, interval_s=3600)
    assert (p2.keep_versions, p2.created_at) == (2, p.created_at) and p2.runs >= 1
    await client.delete_retention_policy(store, "strict")
    with pytest.raises(NotFoundError):
        await client.get_retention_policy(store, "strict")
    with pytest.raises(NotFoundError):
        await client.delete_retention_policy(store, "strict")
    with pytest.raises(InvalidRequestError):
        await client.set_retention_policy(store, "log-*", interval_s=60)  # no criterion
