"""Faults against a real 3-node cluster: nats-server nodes and stream-service instances killed
with SIGKILL while clients append, and writers racing on one stream.

Not in the default run (marker ``chaos``)::

    .venv/bin/pytest -m chaos tests/chaos -s       # the whole suite, 1-2 minutes
    ESDB_CHAOS_SYNC=always .venv/bin/pytest -m chaos tests/chaos -s   # nodes fsync every write

One short test (marker ``chaos_quick``) is in the default run, so CI exercises a node kill and a
service kill on every change. Each test prints its numbers (``-s`` shows them; they are also in
the report's captured output) and asserts them: lost = 0, duplicates = 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import GatewayError, WrongExpectedVersionError
from tests.chaos.harness import (
    CLIENT_TIMEOUT_S,
    RETRY,
    STORE,
    Chaos,
    Ledger,
    LoadStats,
    RetryCounter,
    Verdict,
    close,
    connect,
    create_store,
    log,
    read_all,
    reader,
    settle,
    wait_instances,
    writer,
)


@pytest.fixture
def chaos() -> Iterator[Chaos]:
    # ESDB_CHAOS_SYNC=always runs the same faults on nodes with sync_interval: always
    env = Chaos(services=("stream",), instances=2, sync_always=os.environ.get("ESDB_CHAOS_SYNC") == "always").start()
    try:
        yield env
    finally:
        env.cleanup()


async def _admin(env: Chaos) -> tuple[Client, GaterClient]:
    nc = await connect(env.url, "chaos-admin")
    client = GaterClient(nc, timeout=CLIENT_TIMEOUT_S, retry=RETRY)
    await wait_instances(nc, "stream", 2)
    await create_store(client)
    return nc, client


async def _stream_leader(nc: Client) -> int:
    """Index (0-2) of the node leading the store's log stream."""
    info = await nc.jetstream().stream_info(f"esdb-log-{STORE}")
    assert info.cluster is not None and info.cluster.leader, info.cluster
    return int(info.cluster.leader.removeprefix("n")) - 1


async def _load(
    env: Chaos,
    ledger: Ledger,
    *,
    exact: int,
    any_: int,
    readers: int,
    duration: float,
    faults: Callable[[], Awaitable[None]],
    sizes: tuple[int, int] = (1, 3),
    tag: str = "",
) -> LoadStats:
    """``exact`` writers on their own streams, ``any_`` writers sharing one stream with ANY, and
    ``readers``, each with its own connection, for ``duration`` seconds while ``faults`` runs."""
    stats = LoadStats()
    stop = asyncio.Event()
    conns = [await connect(env.url, f"chaos-client-{i}") for i in range(exact + any_ + readers)]
    clients = [GaterClient(nc, timeout=CLIENT_TIMEOUT_S, retry=RETRY) for nc in conns]
    tasks = [
        asyncio.create_task(writer(clients[i], ledger, stats, f"w{i}{tag}", i, stop, exact=True, sizes=sizes))
        for i in range(exact)
    ]
    tasks += [
        asyncio.create_task(
            writer(clients[exact + i], ledger, stats, f"shared{tag}", exact + i, stop, exact=False, sizes=sizes)
        )
        for i in range(any_)
    ]
    tasks += [asyncio.create_task(reader(clients[exact + any_ + i], ledger, stats, stop)) for i in range(readers)]
    started = time.monotonic()
    try:
        await faults()
        await asyncio.sleep(max(0.0, duration - (time.monotonic() - started)))
    finally:
        stop.set()
        # Writers finish the append they are in (bounded by the retry policy), then stop.
        done, pending = await asyncio.wait(tasks, timeout=120)
        for t in pending:
            t.cancel()
        await close(*conns)
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    assert not pending, f"{len(pending)} clients did not finish within 120 s after the load stopped"
    return stats


async def _verdict(nc: Client, client: GaterClient, ledger: Ledger) -> Verdict:
    await settle(nc)
    return await ledger.verify(lambda s: read_all(client, STORE, s))


def _report(title: str, v: Verdict, stats: LoadStats, retries: RetryCounter) -> None:
    print(f"\n[chaos] {title}: {v.line()}")
    print(
        f"[chaos] {title}: client retries {retries.attempts} ({dict(retries.reasons)}), "
        f"gave up {retries.exhausted}, whole-stream reads {stats.reads}, read problems {len(stats.read_problems)}"
    )
    for p in (v.problems + stats.read_problems + stats.errors)[:20]:
        print(f"[chaos]   {p}")


def _assert_clean(v: Verdict, stats: LoadStats, *, no_errors: bool) -> None:
    assert v.events_acked > 0
    assert (v.lost, v.duplicates, v.partial, v.phantom, v.misplaced, v.gaps) == (0, 0, 0, 0, 0, 0), v.problems[:10]
    assert stats.read_problems == [], stats.read_problems[:10]
    if no_errors:
        assert stats.errors == [], stats.errors[:10]


# --- kill -9 a NATS node ------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_kill_a_nats_node_while_8_clients_append_then_another(chaos: Chaos) -> None:
    """Round 1 kills the node leading the store's stream, round 2 (after n is back and caught up)
    kills another node; 6 writers use exact expected versions on their own streams, 2 share one
    stream with ANY. Every acknowledged event is then read back exactly once."""
    nc, admin = await _admin(chaos)
    ledger = Ledger()
    killed: list[int] = []
    try:
        with RetryCounter() as retries:
            for rnd in (1, 2):
                leader = await _stream_leader(nc)
                victim = leader if leader not in killed else next(i for i in range(3) if i not in killed)
                killed.append(victim)

                async def faults(victim: int = victim) -> None:
                    await asyncio.sleep(3)
                    chaos.kill_node(victim)
                    await asyncio.sleep(8)
                    chaos.restart_node(victim)

                stats = await _load(chaos, ledger, exact=6, any_=2, readers=0, duration=16, faults=faults)
                v = await _verdict(nc, admin, ledger)
                title = f"round {rnd}: node n{victim + 1} (stream leader n{leader + 1}) killed"
                _report(title + (" (totals of both rounds)" if rnd > 1 else ""), v, stats, retries)
                _assert_clean(v, stats, no_errors=True)
    finally:
        await close(nc)
        if any(not p.alive() for p in chaos.procs):
            print(chaos.service_logs())


# --- kill -9 a stream-service instance ----------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_kill_a_service_instance_mid_load_clients_see_no_error(chaos: Chaos) -> None:
    """8 writers with 2-5 event appends and 2 readers checking all-or-nothing on every read; each
    service instance in turn is killed with SIGKILL and started again."""
    nc, admin = await _admin(chaos)
    ledger = Ledger()
    a, b = chaos.instances("stream")

    async def faults() -> None:
        for victim in (a, b):
            await asyncio.sleep(3)
            log(f"kill -9 {victim.name} (pid {victim.pid})")
            victim.kill()
            await asyncio.sleep(3)
            log(f"restarting {victim.name}")
            victim.start()
            await wait_instances(nc, "stream", 2)

    try:
        with RetryCounter() as retries:
            stats = await _load(chaos, ledger, exact=6, any_=2, readers=2, duration=16, faults=faults, sizes=(2, 5))
            v = await _verdict(nc, admin, ledger)
            _report("service instances killed: 2", v, stats, retries)
            _assert_clean(v, stats, no_errors=True)
            assert a.kills == 1 and b.kills == 1
            assert retries.attempts > 0, "no request was in flight at a kill: the test proved nothing"
    finally:
        await close(nc)


# --- racing writers ------------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_16_writers_racing_on_one_stream_one_success_per_version(chaos: Chaos) -> None:
    """16 writers, each on its own connection (spread over the 3 nodes and both instances),
    append to one stream with the version they last read, until 400 appends succeeded."""
    nc, admin = await _admin(chaos)
    target, writers = 400, 16
    stream = "race"
    won: list[tuple[int, str, int]] = []  # (version, event id, writer)
    rejected: list[str] = []
    conns = [await connect(chaos.url, f"chaos-racer-{i}") for i in range(writers)]
    deadline = time.monotonic() + 120

    async def race(i: int, client: GaterClient) -> None:
        while len(won) < target and time.monotonic() < deadline:
            v = await client.get_version(STORE, stream)
            eid = str(uuid.uuid4())
            try:
                r = await client.append_events(STORE, stream, v, [{"event_id": eid, "event_type": "Raced", "data": i}])
            except WrongExpectedVersionError:
                rejected.append(eid)
                continue
            assert r.version == v + 1, (v, r)
            won.append((r.version, eid, i))

    try:
        with RetryCounter() as retries:
            started = time.monotonic()
            clients = [GaterClient(c, timeout=CLIENT_TIMEOUT_S, retry=RETRY) for c in conns]
            await asyncio.gather(*(race(i, c) for i, c in enumerate(clients)))
            took = time.monotonic() - started
        history = await read_all(admin, STORE, stream)
        versions = sorted(v for v, _, _ in won)
        by_version = {e.version: e.event_id for e in history}
        stored = {e.event_id for e in history}
        winners = {eid for _, eid, _ in won}
        duplicates = len(versions) - len(set(versions))
        wrong = [(v, eid) for v, eid, _ in won if by_version.get(v) != eid]
        stored_losers = [eid for eid in rejected if eid in stored]
        per_writer = sorted(sum(1 for _, _, w in won if w == i) for i in range(writers))
        print(
            f"\n[chaos] racing: {len(won)} successes and {len(rejected)} wrong_expected_version in {took:.1f} s "
            f"from {writers} writers (successes per writer {per_writer[0]}..{per_writer[-1]}); stream has "
            f"{len(history)} events; two successes for one version: {duplicates}; success not stored at its "
            f"version: {len(wrong)}; rejected append stored: {len(stored_losers)}; client retries {retries.attempts}"
        )
        assert len(won) >= target
        assert duplicates == 0
        assert versions == list(range(len(won)))
        assert [e.version for e in history] == list(range(len(history)))
        assert len(history) == len(won) and stored == winners
        assert wrong == [] and stored_losers == []
    finally:
        await close(nc, *conns)


# --- the short version, in the default run ---------------------------------------------------------------


@pytest.mark.chaos_quick
@pytest.mark.timeout(120)
async def test_quick_node_and_service_kill(chaos: Chaos) -> None:
    """The CI version (< 40 s): 4 writers for 12 s; the stream's leader node and one service
    instance are killed with SIGKILL and come back; nothing acknowledged is lost or doubled."""
    nc, admin = await _admin(chaos)
    ledger = Ledger()
    leader = await _stream_leader(nc)
    a = chaos.instances("stream")[0]

    async def faults() -> None:
        await asyncio.sleep(2)
        chaos.kill_node(leader)
        await asyncio.sleep(1)
        log(f"kill -9 {a.name} (pid {a.pid})")
        a.kill()
        await asyncio.sleep(3)
        chaos.restart_node(leader)
        a.start()

    try:
        with RetryCounter() as retries:
            stats = await _load(chaos, ledger, exact=3, any_=1, readers=1, duration=12, faults=faults, sizes=(1, 4))
            v = await _verdict(nc, admin, ledger)
            _report(f"quick: node n{leader + 1} (stream leader) and {a.name} killed", v, stats, retries)
            _assert_clean(v, stats, no_errors=True)
    finally:
        await close(nc)


# --- append_multi: transactions across streams under node and service kills (issue 12) --------------


@dataclass
class Tx:
    """One append_multi as a writer made it: (stream, event ids) per append."""

    parts: list[tuple[str, list[str]]]
    acked: bool = False
    versions: list[int] = field(default_factory=list)  # each stream's version from the reply
    error: str | None = None


async def _log_events(client: GaterClient) -> list[dict[str, Any]]:
    """The whole store by ``read_all`` pages (log order)."""
    out: list[dict[str, Any]] = []
    body: dict[str, Any] = {"limit": 1000}
    while True:
        page = await client.request(STORE, "stream", "read_all", body)
        out += page["events"]
        if page["next"] is None:
            return out
        body = {"limit": 1000, "from": page["next"], "inclusive": False}


def _tx_problems(txs: list[Tx], events: list[dict[str, Any]], *, final: bool) -> list[str]:
    """All-or-nothing of every transaction across its streams in one read of the log; with
    ``final``, every acknowledged one at the versions its reply named, and nothing doubled."""
    at = {e["event_id"]: (e["stream_id"], e["version"]) for e in events}
    problems = []
    counts = Counter(e["event_id"] for e in events)
    problems += [f"event {i} stored {c} times" for i, c in counts.items() if c > 1]
    for tx in txs:
        ids = [i for _, part in tx.parts for i in part]
        present = sum(1 for i in ids if i in at)
        if 0 < present < len(ids):
            problems.append(f"transaction {ids[0][:8]}… shows {present} of {len(ids)} events")
        if final and tx.acked:
            if present < len(ids):
                problems.append(f"acknowledged transaction {ids[0][:8]}… lost {len(ids) - present} events")
                continue
            for (stream, part), v in zip(tx.parts, tx.versions, strict=True):
                want = [(stream, x) for x in range(v - len(part) + 1, v + 1)]
                if [at[i] for i in part] != want:
                    problems.append(f"{stream}: acknowledged at {want}, stored at {[at[i] for i in part]}")
    return problems


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_append_multi_is_atomic_under_node_and_service_kills(chaos: Chaos) -> None:
    """4 writers, each appending transactions over its own 3 streams (1-3 events each, exact
    expected versions, a checkpoint), 2 readers reading the whole log with ``read_all`` and
    checking every transaction all-or-nothing; the stream leader's node and a service instance
    are killed with SIGKILL and come back. Afterwards every acknowledged transaction is stored
    whole at the versions its reply named; none is partial or doubled."""
    nc, admin = await _admin(chaos)
    leader = await _stream_leader(nc)
    victim = chaos.instances("stream")[0]
    txs: list[Tx] = []
    read_problems: list[str] = []
    errors: list[str] = []
    reads = 0
    stop = asyncio.Event()
    conns = [await connect(chaos.url, f"chaos-multi-{i}") for i in range(6)]
    clients = [GaterClient(c, timeout=CLIENT_TIMEOUT_S, retry=RETRY) for c in conns]

    async def versions(client: GaterClient, streams: list[str]) -> list[int] | None:
        while not stop.is_set():
            try:
                return [await client.get_version(STORE, s) for s in streams]
            except GatewayError:
                await asyncio.sleep(0.2)
        return None

    async def write(w: int, client: GaterClient) -> None:
        rng = random.Random(w)
        streams = [f"m{w}-{k}" for k in range(3)]
        current = await versions(client, streams)
        n = 0
        while current is not None and not stop.is_set():
            n += 1
            tx = Tx([(s, [str(uuid.uuid4()) for _ in range(rng.randint(1, 3))]) for s in streams])
            txs.append(tx)
            body = {
                "appends": [
                    {
                        "stream_id": s,
                        "expected_version": v,
                        "events": [{"event_id": i, "event_type": "Tx"} for i in ids],
                    }
                    for (s, ids), v in zip(tx.parts, current, strict=True)
                ],
                "checkpoint": {"name": f"w{w}", "position": n},
            }
            try:
                r = await client.request(STORE, "stream", "append_multi", body)
            except GatewayError as exc:
                tx.error = repr(exc)
                errors.append(f"writer {w}: {exc!r}")
                current = await versions(client, streams)
                continue
            tx.acked = True
            tx.versions = [x["version"] for x in r["results"]]
            current = tx.versions

    async def read(client: GaterClient) -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                events = await _log_events(client)
            except GatewayError as exc:
                errors.append(f"read_all: {exc!r}")
                continue
            reads += 1
            read_problems.extend(_tx_problems(txs, events, final=False))
            await asyncio.sleep(0.01)

    try:
        with RetryCounter() as retries:
            tasks = [asyncio.create_task(write(w, clients[w])) for w in range(4)]
            tasks += [asyncio.create_task(read(clients[4 + i])) for i in range(2)]
            await asyncio.sleep(2)
            chaos.kill_node(leader)
            await asyncio.sleep(1)
            log(f"kill -9 {victim.name} (pid {victim.pid})")
            victim.kill()
            await asyncio.sleep(4)
            chaos.restart_node(leader)
            victim.start()
            await asyncio.sleep(5)
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=120)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            assert not pending, (errors[-10:], chaos.service_logs())
            await settle(nc)
            final = _tx_problems(txs, await _log_events(admin), final=True)
        acked = sum(1 for t in txs if t.acked)
        print(
            f"\n[chaos] append_multi: {acked} transactions acknowledged of {len(txs)} sent "
            f"({sum(len(p) for t in txs if t.acked for _, p in t.parts)} events), client-visible errors "
            f"{len(errors)}, whole-log reads {reads}, read problems {len(read_problems)}, final problems "
            f"{len(final)}, client retries {retries.attempts} ({dict(retries.reasons)})"
        )
        for p in (final + read_problems + errors)[:20]:
            print(f"[chaos]   {p}")
        assert acked > 0 and reads > 0
        assert final == [] and read_problems == [], (final + read_problems)[:10]
        # each writer's checkpoint is its last acknowledged transaction, or one after it (acked
        # by the store, the reply lost)
        for w in range(4):
            ck = (await admin.request(STORE, "stream", "checkpoint", {"name": f"w{w}"}))["position"]
            mine = [t for t in txs if t.parts[0][0] == f"m{w}-0"]
            last_acked = max((n for n, t in enumerate(mine, 1) if t.acked), default=0)
            assert ck is not None and last_acked <= ck <= len(mine), (w, ck, last_acked, len(mine))
    finally:
        stop.set()
        await close(nc, *conns)
