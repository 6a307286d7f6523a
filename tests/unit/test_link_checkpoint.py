"""The link driver resumes from its own checkpoint (KV), never from event metadata a client
could have written (issue 10, docs/adr/0016-reserved-streams-and-quotas.md).

``Driver._resync`` against a fake link store: the derived stream's tail holds a forged event
naming a huge ``source_position``; the checkpoint stays what the link recorded."""

from __future__ import annotations

from typing import Any

from esdb_gater.services.link.driver import Driver, derived_event_id
from esdb_gater.services.link.store import Checkpoint, Definition, Stats
from esdb_gater.shared.core.subjects import Subjects
from tests.unit.fake_kv import FakeKV

HUGE = 10**15


def _definition() -> Definition:
    return Definition(
        store="s1",
        key="k",
        name="copy",
        source={"type": "stream", "stream_id": "orders"},
        filter=None,
        transform=None,
        backfill=True,
        created_at=0,
        status="running",
    )


def _forged(name: str = "copy", version: int = 1) -> dict[str, Any]:
    src_id = "forged-source"
    return {
        "event_id": derived_event_id(name, src_id),  # even the id a link would give it
        "event_type": "X",
        "version": version,
        "metadata": {
            "source_stream": "orders",
            "source_position": HUGE,
            "source_version": HUGE,
            "source_event_id": src_id,
        },
    }


class FakeLinks:
    """What Driver._resync asks of services/link/store.py."""

    def __init__(self, ck: Checkpoint | None, head: int, events: list[dict[str, Any]]) -> None:
        self.ck = ck
        self.head = head
        self.events = events
        self.source_lookups: list[tuple[int, int]] = []

    async def checkpoint(self, d: Definition) -> Checkpoint | None:
        return self.ck

    async def derived_version(self, d: Definition) -> int:
        return self.head

    async def derived_events(self, d: Definition, first: int, count: int) -> list[dict[str, Any]]:
        return [ev for ev in self.events if first <= ev["version"] < first + count]

    async def source_event(self, store: str, seq: int, version: int) -> dict[str, Any] | None:
        self.source_lookups.append((seq, version))
        return None  # the source has nothing at the forged position


def _driver(links: FakeLinks, stats: Stats | None = None) -> Driver:
    drv = Driver(None, links, Subjects(), _definition())  # type: ignore[arg-type]
    if stats is not None:
        drv.stats = stats
    return drv


async def test_a_forged_tail_event_does_not_move_the_kv_checkpoint() -> None:
    ck = Checkpoint(pos=7, ver=3, link_version=0)
    links = FakeLinks(ck, head=1, events=[_forged(version=1)])
    drv = _driver(links)
    await drv._resync()
    assert drv.checkpoint == (7, 3)  # the link's own record, not (HUGE, HUGE)
    assert drv.version == 1  # appends go after the forged event (expected version)
    # the forged event is only "already there" for its exact (id, position, version)
    assert drv.written == {(derived_event_id("copy", "forged-source"), HUGE, HUGE)}


async def test_copies_after_the_checkpoint_are_recognised_by_id_not_trusted_as_checkpoint() -> None:
    ck = Checkpoint(pos=7, ver=3, link_version=4)
    real = {
        "event_id": derived_event_id("copy", "e8"),
        "version": 5,
        "metadata": {"source_position": 8, "source_version": 4, "source_event_id": "e8"},
    }
    links = FakeLinks(ck, head=6, events=[real, _forged(version=6)])
    drv = _driver(links)
    await drv._resync()
    assert drv.checkpoint == (7, 3)
    assert (derived_event_id("copy", "e8"), 8, 4) in drv.written


async def test_without_a_kv_checkpoint_a_forged_tail_is_checked_against_the_source() -> None:
    links = FakeLinks(None, head=1, events=[_forged(version=1)])
    drv = _driver(links)
    await drv._resync()
    assert links.source_lookups == [(HUGE, HUGE)]
    assert drv.checkpoint == (0, -1)  # the source has no such event: start from the beginning


async def test_without_a_kv_checkpoint_the_counters_position_wins_over_the_tail() -> None:
    links = FakeLinks(None, head=1, events=[_forged(version=1)])
    drv = _driver(links, Stats(processed=2, pos=12))
    await drv._resync()
    assert drv.checkpoint == (12, 1 << 62)
    assert links.source_lookups == []


async def test_a_fresh_link_starts_from_nothing() -> None:
    drv = _driver(FakeLinks(None, head=-1, events=[]))
    await drv._resync()
    assert (drv.checkpoint, drv.version, drv.written) == ((0, -1), -1, set())


async def test_a_stale_holder_cannot_move_the_checkpoint_back() -> None:
    from esdb_gater.services.link.store import LinkStore

    links = LinkStore.__new__(LinkStore)
    links.kv = FakeKV()
    d = _definition()
    rev_a = await links.save_checkpoint(d, Checkpoint(10, 0, link_version=5))
    rev_a = await links.save_checkpoint(d, Checkpoint(12, 0, link_version=6), rev_a)
    assert rev_a is not None
    # a second holder that recognised an older append of its own writes its older mark
    assert await links.save_checkpoint(d, Checkpoint(11, 0, link_version=5)) is None
    assert await links.checkpoint(d) == Checkpoint(12, 0, 6)
    # and the first goes on, its cached revision still right
    assert await links.save_checkpoint(d, Checkpoint(13, 0, link_version=7), rev_a) is not None
    assert await links.checkpoint(d) == Checkpoint(13, 0, 7)
