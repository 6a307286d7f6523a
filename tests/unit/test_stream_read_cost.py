"""A read of ``count`` events fetches about ``count`` events' worth of commits, whatever the
append sizes (issue 11): the store's Direct Gets over the in-memory log are counted for a
100 000-event stream written in appends of 1, 50 and 500 events."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest

from esdb_gater.services.stream.readall import AllReader
from esdb_gater.services.stream.store import EventStore
from esdb_gater.shared.core.settings import QuotaSettings, Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import H_COUNT, H_VERSION, encode_events, new_event_id
from esdb_gater.shared.log.fake import FakeClock, FakeLog
from esdb_gater.shared.log.port import BatchGet, MsgGet, StoredMsg, StreamInfo
from esdb_gater.shared.models.stream import EventIn, ReadAllRequest

S = Subjects()
TOTAL = 100_000
COUNT = 100
DATA = {"kind": "order-line", "sku": "SKU-0000000", "qty": 1, "price": "12.50", "note": "x" * 60}


@dataclass
class Counted:
    batches: int = 0
    commits: int = 0  # commits returned by batched Direct Gets
    events: int = 0  # events in them
    probes: int = 0  # single Direct Gets (the version -> commit search)

    def reset(self) -> None:
        self.batches = self.commits = self.events = self.probes = 0


class CountingLog(FakeLog):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.counted = Counted()

    async def direct_batch(self, stream: str, req: BatchGet) -> tuple[list[StoredMsg], int]:
        msgs, pending = await super().direct_batch(stream, req)
        if req.get("next_by_subj"):
            self.counted.batches += 1
            self.counted.commits += len(msgs)
            self.counted.events += sum(int(m.headers.get(H_COUNT, "0")) for m in msgs)
        return msgs, pending

    async def direct_get(self, stream: str, req: MsgGet) -> StoredMsg | None:
        self.counted.probes += 1
        return await super().direct_get(stream, req)


async def _stream(total: int, per_append: int) -> tuple[EventStore, CountingLog]:
    """A store with stream ``s`` of ``total`` events in commits of ``per_append``, published raw
    in the store's commit format (100 000 one-event appends through ``append`` would be slow)."""
    log = CountingLog(FakeClock(start_ns=time.time_ns() - 3600 * 10**9))
    settings = Settings(
        auto_create_stores=True, default_store=StoreConfig(), quotas=QuotaSettings(auto_created_stores=0)
    )
    es = EventStore(log, S, settings)
    await es.store("o")
    subject = S.log_subject("o", "s")
    other = S.log_subject("o", "other")
    for first in range(0, total, per_append):
        k = min(per_append, total - first)
        events = [EventIn(event_type="T", data=DATA) for _ in range(k)]
        body = encode_events(events, [new_event_id() for _ in range(k)])
        await log.publish(subject, body, {H_VERSION: str(first), H_COUNT: str(k)})
        if first % (per_append * 97) == 0:  # another stream's commits in between
            await log.publish(other, body, {H_VERSION: str(first), H_COUNT: str(k)})
    return es, log


@pytest.mark.parametrize("per_append", [1, 50, 500])
async def test_a_read_fetches_the_commits_it_needs_not_count_commits(per_append: int) -> None:
    es, log = await _stream(TOTAL, per_append)
    commits_needed = math.ceil(COUNT / per_append) + 1  # a read may start inside a commit
    probe_bound = 4 * math.ceil(math.log2(TOTAL / per_append + 1)) + 4
    mid = TOTAL // 2 - 37  # the read spans two commits of any size
    cases = [
        ("forward", 0, list(range(0, COUNT))),
        ("forward", mid, list(range(mid, mid + COUNT))),
        ("forward", TOTAL - COUNT, list(range(TOTAL - COUNT, TOTAL))),
        ("backward", COUNT - 1, list(range(COUNT - 1, -1, -1))),
        ("backward", mid + COUNT - 1, list(range(mid + COUNT - 1, mid - 1, -1))),
        ("backward", -1, list(range(TOTAL - 1, TOTAL - 1 - COUNT, -1))),
    ]
    for direction, start, expected in cases:
        log.counted.reset()
        got = await es.read("o", "s", start, COUNT, direction)
        assert [ev["version"] for ev in got] == expected, (direction, start)
        c = log.counted
        where = f"{direction} from {start}, appends of {per_append}: {c}"
        assert c.commits <= 2 * commits_needed + 2, where  # not COUNT commits
        assert c.events <= 2 * COUNT + 2 * per_append, where
        assert c.batches <= 3, where
        assert c.probes <= probe_bound, where


async def test_a_read_of_a_small_stream_costs_what_it_did() -> None:
    """The 1 000-event reference: a read of 100 events in one-event appends is one batch."""
    es, log = await _stream(1_000, 1)
    got = await es.read("o", "s", 0, COUNT, "forward")
    assert [ev["version"] for ev in got] == list(range(COUNT))
    assert (log.counted.batches, log.counted.commits) == (1, COUNT)


class ApiCountingLog(CountingLog):
    """Also counts the JSON API calls (STREAM.INFO and friends) a read makes."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.infos = 0

    async def stream_info(self, stream: str, *, subjects_filter: str | None = None, offset: int = 0) -> StreamInfo:
        self.infos += 1
        return await super().stream_info(stream, subjects_filter=subjects_filter, offset=offset)


async def test_a_read_all_page_costs_one_get_besides_its_commits() -> None:
    """A forward page: one get of the newest event (its id and the end of the read) and the
    batches of the commits it returns; no STREAM.INFO. Backward adds one get of the oldest."""
    log = ApiCountingLog(FakeClock(start_ns=time.time_ns() - 3600 * 10**9))
    es = EventStore(log, S, Settings(auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0)))
    for i in range(300):
        await es.append("o", f"s{i % 7}", -2, [EventIn(event_type="T", data={"i": i})])
    reader = AllReader(es)
    log.counted.reset()
    page = await reader.read_all("o", ReadAllRequest(limit=50))
    assert [ev["data"]["i"] for ev in page.events] == list(range(50))
    assert page.last_notification_id == max(
        ev["notification_id"]
        for ev in (await reader.read_all("o", ReadAllRequest(direction="backward", limit=1))).events
    )
    log.counted.reset()
    log.infos = 0
    page = await reader.read_all(
        "o", ReadAllRequest.model_validate({"limit": 50, "inclusive": False, "from": page.next})
    )
    assert [ev["data"]["i"] for ev in page.events] == list(range(50, 100))
    assert (log.infos, log.counted.probes, log.counted.batches) == (0, 1, 1)
    log.counted.reset()
    page = await reader.read_all("o", ReadAllRequest(direction="backward", limit=50))
    assert [ev["data"]["i"] for ev in page.events] == list(range(299, 249, -1))
    assert log.infos == 0 and log.counted.probes == 2
