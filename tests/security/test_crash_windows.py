"""Attack: crash windows that lose or duplicate (issue 10, item 7; ADR 0017).

* The event-id index is written after the log. A writer that dies between the two left a commit
  the index did not know, so a resend with the same event ids (``expected_version`` ANY) after
  JetStream's duplicate window was stored twice. Now a miss is confirmed against the log after
  the index's checkpoint, a background repair indexes what is missing, and ``store.reindex``
  rebuilds the index from the log.
* The scavenger purged the planned range even when the archive it read came back short. Now it
  purges only what it archived and verified, or nothing (``unavailable``, retryable).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from esdb_gater.services.scavenger.engine import Scavenger
from esdb_gater.services.scavenger.store import ScavengeStore
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.eventlog import encode_events, new_event_id
from esdb_gater.shared.log.index import IndexEntry
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models.scavenger import ScavengeOptions
from esdb_gater.shared.models.stream import EventIn
from esdb_gater.shared.tooling.natsserver import NatsServer
from tests.conftest import Wire

S = Subjects()
WINDOW_S = 1.0  # the test stores' duplicate window: a resend after it is not JetStream's to catch


async def _store_with_short_window(wire: Wire, store: str) -> None:
    (await wire.call(store, "create", {"duplicate_window_s": WINDOW_S}, service="store")).ok()


async def _past_the_window() -> None:
    # a precondition, not a proof: JetStream's duplicate window must be over for the resend
    await asyncio.sleep(WINDOW_S * 1.5)


def _events(ids: list[str]) -> list[dict[str, Any]]:
    return [{"event_id": i, "event_type": "Paid", "data": {"n": k}} for k, i in enumerate(ids)]


async def _append(wire: Wire, store: str, stream_id: str, ids: list[str], expected: int = -2) -> dict[str, Any]:
    body = {"stream_id": stream_id, "expected_version": expected, "events": _events(ids)}
    return (await wire.call(store, "append", body)).ok()  # type: ignore[no-any-return]


async def _log_events(wire: Wire, store: str, stream_id: str) -> list[dict[str, Any]]:
    reply = await wire.call(store, "forward", {"stream_id": stream_id, "start_version": 0, "count": 100})
    return reply.ok()["events"]  # type: ignore[no-any-return]


async def _commit_without_index(nc: Client, store: str, stream_id: str, ids: list[str]) -> int:
    """What a writer killed between the log and the index leaves: the commit, as store.py
    writes it (headers, ``Nats-Msg-Id``, msgpack body), and no index entry."""
    events = [EventIn.model_validate(e) for e in _events(ids)]
    digest = hashlib.sha256(json.dumps([store, stream_id, ids], ensure_ascii=False).encode()).hexdigest()[:40]
    headers = {
        "Esdb-Version": "0",
        "Esdb-Count": str(len(ids)),
        "Nats-Msg-Id": digest,
        "Nats-Expected-Last-Subject-Sequence": "0",
    }
    ack = await nc.jetstream().publish(S.log_subject(store, stream_id), encode_events(events, ids), headers=headers)
    return int(ack.seq)


async def _index_entry(nc: Client, store: str, event_id: str) -> IndexEntry | None:
    body = json.dumps({"last_by_subj": S.index_event_id(store, event_id)}).encode()
    msg = await nc.request(f"$JS.API.DIRECT.GET.{S.index_stream(store)}", body, timeout=5)
    if (msg.headers or {}).get("Status") == "404":
        return None
    return IndexEntry.decode(msg.data)  # [position] (ADR 0025)


async def test_resend_after_a_crash_between_log_and_index_is_deduplicated(wire: Wire, nc: Client, store: str) -> None:
    await _store_with_short_window(wire, store)
    ids = [new_event_id(), new_event_id()]
    position = await _commit_without_index(nc, store, "acct-1", ids)
    assert await _index_entry(nc, store, ids[0]) is None  # the crash window: logged, not indexed
    await _past_the_window()

    again = await _append(wire, store, "acct-1", ids)  # the client's retry
    assert again == {"version": 1, "position": position, "count": 2}
    assert [e["event_id"] for e in await _log_events(wire, store, "acct-1")] == ids  # one copy
    entry = await _index_entry(nc, store, ids[0])  # and the index knows it now
    assert entry is not None and entry.position == position


async def test_many_unindexed_commits_are_found_and_repaired(wire: Wire, nc: Client, store: str) -> None:
    """Several writers died, in several streams; unrelated appends came after them. Every resend
    is still recognised, and the background repair indexes them all."""
    await _store_with_short_window(wire, store)
    lost = {f"acct-{k}": [new_event_id()] for k in range(5)}
    positions = {s: await _commit_without_index(nc, store, s, ids) for s, ids in lost.items()}
    for k in range(20):
        await _append(wire, store, f"other-{k % 3}", [new_event_id()])
    await _past_the_window()
    for s, ids in lost.items():
        assert (await _append(wire, store, s, ids))["position"] == positions[s]
        assert len(await _log_events(wire, store, s)) == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = [await _index_entry(nc, store, ids[0]) for ids in lost.values()]
        if all(e is not None for e in entries):
            break
        await asyncio.sleep(0.05)
    assert [e.position if e else None for e in entries] == list(positions.values())


async def test_store_reindex_rebuilds_the_index_from_the_log(wire: Wire, nc: Client, store: str) -> None:
    await _store_with_short_window(wire, store)
    ids = [new_event_id()]
    # exact-version appends: the service writes no index entry for them (no background repair
    # either), so what is in the index below is the rebuild's work alone
    first = await _append(wire, store, "acct-1", ids, expected=-1)
    later = await _append(wire, store, "acct-2", [new_event_id()], expected=-1)
    # the index loses whatever it had (and its checkpoint): e.g. a purge by hand
    (
        await wire.raw(
            f"$JS.API.STREAM.PURGE.{S.index_stream(store)}", json.dumps({"filter": f"{S.index_root(store)}.>"}).encode()
        )
    ).ok()
    assert await _index_entry(nc, store, ids[0]) is None

    r = (await wire.call(store, "reindex", {}, service="store")).ok()
    assert r["store"] == store and r["scanned"] == 2 and r["indexed"] == 2
    assert r["checkpoint"] >= later["position"]
    entry = await _index_entry(nc, store, ids[0])
    assert entry is not None and entry.position == first["position"]  # acct-1's commit
    await _past_the_window()
    assert await _append(wire, store, "acct-1", ids) == first
    assert len(await _log_events(wire, store, "acct-1")) == 1
    # a second run finds everything indexed (through the Python client this time)
    again = await GaterClient(nc).reindex_store(store)
    assert again.indexed == 0 and again.checkpoint == r["checkpoint"]


async def test_reindex_of_an_unknown_store_creates_nothing(wire: Wire, store: str) -> None:
    reply = await wire.call(store, "reindex", {}, service="store")
    assert reply.is_error and reply.body["error"]["code"] in ("store_not_found", "not_found"), reply.body


# --- the scavenger ---------------------------------------------------------------------------------


@pytest.fixture
async def engine(nats_url: str, services: Any) -> Any:
    """A scavenger engine of its own on the session's server (so a test can make its reads fail)."""
    conn = await nats.connect(nats_url)
    log = Log(conn)
    await log.start()
    db = ScavengeStore(conn, log, S, Settings(nats_url=nats_url))
    await db.open()
    try:
        yield Scavenger(db)
    finally:
        await log.stop()
        await conn.drain()


async def _ten_commits(wire: Wire, store: str, stream_id: str) -> None:
    for k in range(10):
        body = {"stream_id": stream_id, "expected_version": k - 1, "events": [{"event_type": "T", "data": {"k": k}}]}
        (await wire.call(store, "append", body)).ok()


OPTS = ScavengeOptions(keep_versions=2, require_snapshot=False, archive=True)


async def test_short_archive_read_purges_nothing(wire: Wire, store: str, engine: Scavenger) -> None:
    """A lagging follower ends the batched read early: the archive lacks the last commits."""
    await _ten_commits(wire, store, "acct")
    real = engine.db.commits

    async def short(*args: Any, **kwargs: Any) -> Any:
        return (await real(*args, **kwargs))[:-3]

    engine.db.commits = short  # type: ignore[method-assign]
    with pytest.raises(UnavailableError) as caught:
        await engine.scavenge(store, "acct", OPTS)
    assert caught.value.retryable
    d = caught.value.details
    assert d["planned"]["count"] == 8 and d["archived"]["count"] == 5, d
    assert [e["version"] for e in await _log_events(wire, store, "acct")] == list(range(10))  # nothing purged

    engine.db.commits = real  # type: ignore[method-assign]
    done = await engine.scavenge(store, "acct", OPTS)  # the retry, with a full read, goes through
    assert done.deleted_count == 8 and done.archived
    assert [e["version"] for e in await _log_events(wire, store, "acct")] == [8, 9]


async def test_commit_deleted_between_plan_and_archive_purges_nothing(
    wire: Wire, nc: Client, store: str, engine: Scavenger
) -> None:
    """The log changes under the scavenger (a message removed between plan and archive): the
    archive has a hole, so nothing is purged."""
    await _ten_commits(wire, store, "acct")
    events = await _log_events(wire, store, "acct")
    real_plan = engine.plan

    async def plan_then_delete(*args: Any, **kwargs: Any) -> Any:
        p = await real_plan(*args, **kwargs)
        body = json.dumps({"seq": events[4]["position"], "no_erase": True}).encode()
        reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{S.log_stream(store)}", body, timeout=5)
        assert json.loads(reply.data).get("success"), reply.data
        return p

    engine.plan = plan_then_delete  # type: ignore[method-assign]
    with pytest.raises(UnavailableError) as caught:
        await engine.scavenge(store, "acct", OPTS)
    assert "versions jump" in caught.value.details["reason"]
    left = [e["version"] for e in await _log_events(wire, store, "acct")]
    assert left == [0, 1, 2, 3, 5, 6, 7, 8, 9]  # only the hand-deleted one is gone


# --- kill -9 of a writer mid-append ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _serve_stream(url: str, log_file: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ESDB_GATER_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ESDB_GATER_AUTO_CREATE_STORES": "true",
            "ESDB_GATER_DEFAULT_STORE__DUPLICATE_WINDOW_S": str(WINDOW_S),
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "esdb_gater.cli", "serve", "stream", "--nats", url],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _until_serving(wire: Wire, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            (await wire.call("ping", "version", {"stream_id": "x"}, wait=1)).ok()
            return
        except (TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_kill_9_mid_append_loop_then_resend_stores_each_append_once(tmp_path: Path) -> None:
    """A stream service is killed (SIGKILL) while appends are in flight, some between the log
    and the index; a new instance takes over and every append is resent with its ids after the
    duplicate window: each is stored exactly once."""
    with NatsServer(name="crash") as srv, (tmp_path / "stream.log").open("wb") as out:
        conn = await nats.connect(srv.url)
        wire = Wire(conn)
        first = _serve_stream(srv.url, out)
        second: subprocess.Popen[bytes] | None = None
        try:
            await _until_serving(wire)
            store = "crash"
            (await wire.call(store, "create", {"duplicate_window_s": WINDOW_S}, service="store")).ok()
            appends = [(f"acct-{k % 4}", [new_event_id(), new_event_id()]) for k in range(300)]

            done = 0
            sixty_done = asyncio.Event()

            async def send(stream_id: str, ids: list[str]) -> bool:
                nonlocal done
                body = {"stream_id": stream_id, "expected_version": -2, "events": _events(ids)}
                try:
                    return not (await wire.call(store, "append", body, wait=3)).is_error
                except (TimeoutError, nats.errors.NoRespondersError):
                    return False
                finally:
                    done += 1
                    if done >= 60:
                        sixty_done.set()

            tasks = [asyncio.create_task(send(s, ids)) for s, ids in appends]
            await asyncio.wait_for(sixty_done.wait(), 30)
            os.kill(first.pid, signal.SIGKILL)  # mid-loop: requests in flight die with it
            first.wait(10)
            answered = await asyncio.gather(*tasks)
            assert sum(answered) > 0 and sum(answered) < len(appends), sum(answered)

            second = _serve_stream(srv.url, out)
            await _until_serving(wire)
            await asyncio.sleep(WINDOW_S * 1.5)  # precondition: JetStream's window is over
            for s, ids in appends:  # every client resends what it sent (answered or not)
                body = {"stream_id": s, "expected_version": -2, "events": _events(ids)}
                (await wire.call(store, "append", body, wait=10)).ok()
            for k in range(4):
                read = {"stream_id": f"acct-{k}", "start_version": 0, "count": 10_000}
                reply = await wire.call(store, "forward", read)
                stored = [e["event_id"] for e in reply.ok()["events"]]
                sent = [i for s, ids in appends if s == f"acct-{k}" for i in ids]
                assert len(stored) == len(set(stored)), "an append was stored twice"
                assert sorted(stored) == sorted(sent)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            await conn.close()
