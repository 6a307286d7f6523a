"""The scavenger purges only what it archived and verified (services/scavenger/engine.py; ADR 0017)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.log.eventlog import Commit, decode_commit
from esdb_gater.shared.log.jetstream import StoredMsg
from esdb_gater.shared.models.scavenger import ScavengeOptions

OPTS = ScavengeOptions(keep_versions=1, require_snapshot=False, archive=True)


def _sm(seq: int, version: int) -> StoredMsg:
    body = msgpack.packb([{"i": f"e{version}", "t": "T", "d": {}}])
    return StoredMsg(f"esdb.log.o.e.s{seq}", seq, 1_000, {"Esdb-Version": str(version), "Esdb-Count": "1"}, body)


class FakeDb:
    """A stream of commits at positions 10, 20, … with versions 0, 1, …; ``drop`` takes commits
    out of what the batched read returns (a lagging follower), ``leader_drop`` out of leader reads."""

    def __init__(self, n: int, replicas: int = 1, drop: set[int] | None = None, leader_drop: set[int] | None = None):
        self.log = [_sm(10 * (v + 1), v) for v in range(n)]
        self.n_replicas = replicas
        self.drop = drop or set()
        self.leader_drop = leader_drop or set()
        self.purged: list[int] = []
        self.archived: list[Any] = []
        self.leader_reads = 0

    async def head(self, store: str, stream_id: str) -> Commit:
        return Commit(self.log[-1].seq, len(self.log) - 1, 1, 0)

    async def first(self, store: str, stream_id: str) -> Commit | None:
        return Commit(self.log[0].seq, 0, 1, 0)

    async def position_of(self, store: str, stream_id: str, version: int) -> int | None:
        return self.log[version].seq

    async def commit_at(self, store: str, seq: int) -> Commit | None:
        v = seq // 10 - 1
        return Commit(seq, v, 1, 0)

    async def replicas(self, store: str) -> int:
        return self.n_replicas

    async def commits(self, store: str, stream_id: str, from_seq: int, below_seq: int, *, leader: bool = False) -> Any:
        if leader:
            self.leader_reads += 1
        gone = self.leader_drop if leader else self.drop
        return [sm for sm in self.log if from_seq <= sm.seq < below_seq and sm.seq not in gone]

    @staticmethod
    def events_of(commits: list[StoredMsg], stream_id: str) -> list[dict[str, Any]]:
        return [ev for sm in commits for ev in decode_commit(sm, stream_id)]

    async def write_archive(self, store: str, key: str, stream_id: str, versions: Any, events: Any) -> None:
        self.archived.append((versions, len(events)))

    async def purge_below(self, store: str, stream_id: str, seq: int) -> int:
        self.purged.append(seq)
        return 0


async def test_a_full_archive_is_purged() -> None:
    db = FakeDb(6)
    r = await Scavenger(db).scavenge("o", "s", OPTS)  # type: ignore[arg-type]
    assert r.deleted_count == 5 and db.archived == [((0, 4), 5)] and db.purged == [60]


@pytest.mark.parametrize("drop", [{50}, {30}, {40, 50}])
async def test_a_short_or_holed_archive_purges_nothing(drop: set[int]) -> None:
    db = FakeDb(6, drop=drop)
    with pytest.raises(UnavailableError) as caught:
        await Scavenger(db).scavenge("o", "s", OPTS)  # type: ignore[arg-type]
    assert db.purged == [] and db.archived == []
    assert caught.value.retryable and caught.value.details["planned"]["count"] == 5


async def test_a_replicated_store_reads_again_from_the_leader() -> None:
    db = FakeDb(6, replicas=3, drop={50})
    r = await Scavenger(db).scavenge("o", "s", OPTS)  # type: ignore[arg-type]
    assert db.leader_reads == 1 and r.deleted_count == 5 and db.purged == [60]


async def test_a_replicated_store_whose_leader_read_is_short_purges_nothing() -> None:
    db = FakeDb(6, replicas=3, drop={50}, leader_drop={50})
    with pytest.raises(UnavailableError) as caught:
        await Scavenger(db).scavenge("o", "s", OPTS)  # type: ignore[arg-type]
    assert db.purged == [] and caught.value.details["read_from_leader"] is True


async def test_a_bounded_archive_is_checked_against_the_commit_it_stops_at() -> None:
    db = FakeDb(10)
    r = await Scavenger(db, archive_max_events=3).scavenge("o", "s", OPTS)  # type: ignore[arg-type]
    assert r.truncated and db.archived == [((0, 2), 3)] and db.purged == [40]
