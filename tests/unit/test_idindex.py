"""The event-id index's repair (services/stream/idindex.py; ADR 0017), over an in-memory log."""

from __future__ import annotations

from typing import Any

import msgpack

from esdb_gater.services.stream.idindex import EventIdIndex
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.index import IndexEntry
from esdb_gater.shared.log.jetstream import StoredMsg

S = Subjects()


class FakeLog:
    """JetStream as the index needs it: the log stream (commits) and the index stream (last
    value per subject)."""

    def __init__(self) -> None:
        self.log: list[StoredMsg] = []
        self.index: dict[str, bytes] = {}
        self.published: list[str] = []

    def commit(self, stream_id: str, ids: list[str], *, msg_id: bool = True, version: int = 0) -> int:
        seq = len(self.log) + 1
        headers = {"Esdb-Version": str(version), "Esdb-Count": str(len(ids))}
        if msg_id:
            headers["Nats-Msg-Id"] = f"m{seq}"
        body = msgpack.packb([{"i": i, "t": "T", "d": {}} for i in ids])
        self.log.append(StoredMsg(S.log_subject("o", stream_id), seq, seq * 1_000, headers, body))
        return seq

    async def direct_get(self, stream: str, req: dict[str, Any]) -> StoredMsg | None:
        data = self.index.get(req["last_by_subj"])
        return None if data is None else StoredMsg(req["last_by_subj"], 1, 0, {}, data)

    async def direct_batch(self, stream: str, req: dict[str, Any]) -> tuple[list[StoredMsg], int]:
        if "multi_last" in req:
            return [StoredMsg(s, 1, 0, {}, self.index[s]) for s in req["multi_last"] if s in self.index], 0
        wanted = req["next_by_subj"]

        def hit(subject: str) -> bool:
            return subject == wanted or (wanted.endswith("*") and subject.startswith(wanted[:-1]))

        hits = [sm for sm in self.log if sm.seq >= req["seq"] and hit(sm.subject)]
        return hits[: req["batch"]], max(0, len(hits) - req["batch"])

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.index[subject] = payload
        self.published.append(subject)


def _q(log: FakeLog, event_id: str) -> int | None:
    data = log.index.get(S.index_event_id("o", event_id))
    return None if data is None else IndexEntry.decode(data).position


async def test_repair_indexes_caller_id_commits_and_moves_the_checkpoint() -> None:
    log = FakeLog()
    ix = EventIdIndex(log, S)  # type: ignore[arg-type]
    a = log.commit("s1", ["a1", "a2"])
    log.commit("s2", ["gen"], msg_id=False)  # ids made by the service: nothing to de-duplicate
    log.log.append(StoredMsg(S.log_subject("o", "s3"), 3, 0, {"Nats-Msg-Id": "x"}, b"not msgpack"))
    r = await ix.repair("o")
    assert (r.scanned, r.indexed, r.checkpoint) == (3, 1, 3)
    assert _q(log, "a1") == a and _q(log, "gen") is None
    assert await ix.checkpoint("o", fresh=True) == 3
    assert (await ix.repair("o")).scanned == 0  # incremental: from the checkpoint on


async def test_repair_never_points_an_entry_back_at_an_earlier_commit() -> None:
    log = FakeLog()
    ix = EventIdIndex(log, S)  # type: ignore[arg-type]
    log.commit("s1", ["x"])
    later = log.commit("s2", ["x"])  # the id reused: the live path indexed the later one
    log.index[S.index_event_id("o", "x")] = msgpack.packb({"s": "s2", "q": later})
    r = await ix.repair("o", full=True)
    assert r.indexed == 0 and _q(log, "x") == later


async def test_a_miss_finds_the_unindexed_commit_older_than_the_cutoff() -> None:
    log = FakeLog()
    ix = EventIdIndex(log, S)  # type: ignore[arg-type]
    old = log.commit("s1", ["a"])
    log.commit("s1", ["b"])
    found = await ix.unindexed("o", "s1", ["a"], after=0, young_after_ns=10_000)
    assert found is not None and found.seq == old
    assert await ix.unindexed("o", "s1", ["b"], after=0, young_after_ns=1_500) is None  # young: JetStream's
    assert await ix.unindexed("o", "s1", ["a"], after=old, young_after_ns=10_000) is None  # below checkpoint


async def test_the_checkpoint_says_since_when_every_later_commit_is_young() -> None:
    """A repair records when it began: every commit after its checkpoint was written later, so a
    miss soon after needs no read of the log (services/stream/store.py::_unindexed_append)."""
    import time

    log = FakeLog()
    ix = EventIdIndex(log, S)  # type: ignore[arg-type]
    log.commit("s1", ["a"])
    before = time.time_ns()
    await ix.repair("o")
    q, t = await ix.checkpoint_at("o", fresh=True)
    assert q == 1 and before <= t <= time.time_ns()
    # nothing new to index: the checkpoint stays, its time moves on
    await ix.repair("o")
    q2, t2 = await ix.checkpoint_at("o", fresh=True)
    assert (q2, t2 >= t) == (1, True)
    # a checkpoint written before "t" existed reads as 0: the miss then scans, as it did
    log.index[S.index_checkpoint("o")] = msgpack.packb({"q": 1})
    assert await ix.checkpoint_at("o", fresh=True) == (1, 0)
