"""``gater read`` paging (esdb_gater/cli/ops.py ``_Reader``) against a scripted stream: no network."""

from __future__ import annotations

from typing import Any, cast

from nats.aio.client import Client

from esdb_gater.cli.ops import _Reader

NO_NC = cast(Client, None)  # the scripted reader never touches the network


class ScriptedReader(_Reader):
    """A stream whose versions are ``versions``; ``after_page`` runs after each page is read
    (events appended between the page and the head read)."""

    def __init__(self, versions: list[int], after_page: Any = None) -> None:
        self.versions = versions
        self.after_page = after_page
        self.shown: list[int] = []
        self.printed = 0
        self.as_json = True

    async def _page(self, nc: Any, start: int, count: int, direction: str) -> list[dict[str, Any]]:
        page = [{"version": v} for v in self.versions if v >= start][:count]
        if self.after_page is not None:
            self.after_page(self)
            self.after_page = None
        return page

    async def _head(self, nc: Any) -> int:
        return max(self.versions, default=-1)

    def emit(self, events: list[dict[str, Any]]) -> None:
        self.shown += [int(e["version"]) for e in events]
        self.printed += len(events)


async def test_events_appended_between_the_page_and_the_head_are_not_skipped() -> None:
    def append_two(r: ScriptedReader) -> None:
        r.versions += [1, 2]

    r = ScriptedReader([0], after_page=append_two)
    nxt = await r.forward(NO_NC, 0, 3)
    assert r.shown[:1] == [0]
    if len(r.shown) < 3:  # the next poll reads on from where the first stopped
        await r.forward(NO_NC, nxt, 3)
    assert r.shown == [0, 1, 2]


async def test_a_scavenged_gap_does_not_end_the_read() -> None:
    r = ScriptedReader([0, 1, 250, 251])
    r.PAGE = 100
    assert await r.forward(NO_NC, 0, None) == 252
    assert r.shown == [0, 1, 250, 251]


async def test_at_the_head_the_next_version_is_returned() -> None:
    r = ScriptedReader([0, 1])
    assert await r.forward(NO_NC, 0, None) == 2
    assert await r.forward(NO_NC, 2, None) == 2 and r.shown == [0, 1]
