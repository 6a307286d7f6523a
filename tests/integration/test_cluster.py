"""A real 3-node cluster: an R3 store, two service instances on different nodes, and reads
that see every acknowledged append at once (read-your-writes across instances)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from shared.client import GaterClient
from shared.errors import GatewayTimeoutError, UnavailableError
from shared.natsserver import NatsCluster
from shared.runner import start_services
from shared.settings import Settings


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    with NatsCluster(3) as c:
        yield c


async def _wait_for_jetstream(client: GaterClient) -> None:
    for _ in range(100):
        try:
            await client.create_store("r3", replicas=3)
            return
        except (UnavailableError, GatewayTimeoutError):
            await asyncio.sleep(0.2)
    raise AssertionError("JetStream cluster did not become ready")


async def test_r3_store_reads_its_writes_across_instances_on_other_nodes(cluster: NatsCluster) -> None:
    a = await start_services(["stream"], Settings(nats_url=cluster.urls[0]))
    b = await start_services(["stream"], Settings(nats_url=cluster.urls[1]))
    nc1 = await nats.connect(cluster.urls[2])
    nc2 = await nats.connect(cluster.urls[1])
    try:
        c1, c2 = GaterClient(nc1, timeout=10), GaterClient(nc2, timeout=10)
        await _wait_for_jetstream(c1)
        info = await c1.store_info("r3")
        assert info.replicas == 3
        for i in range(30):
            r = await c1.append_events("r3", "acct-1", i - 1, [{"event_type": "Step", "data": i}])
            assert r.version == i
            # the other client, through whichever instance answers, sees it immediately
            assert await c2.get_version("r3", "acct-1") == i
            tail = await c2.stream_backward("r3", "acct-1", -1, 1)
            assert [e.data for e in tail] == [i]
        events = await c2.stream_forward("r3", "acct-1", 0, 100)
        assert [e.version for e in events] == list(range(30))

        # racing writers on both nodes: one success per version, no gaps
        async def writer(c: GaterClient, n: int) -> int:
            ok = 0
            for _ in range(n):
                while True:
                    v = await c.get_version("r3", "race")
                    try:
                        await c.append_events("r3", "race", v, [{"event_type": "W"}])
                        ok += 1
                        break
                    except Exception as exc:  # wrong_expected_version: re-read and retry
                        assert type(exc).__name__ == "WrongExpectedVersionError", repr(exc)
            return ok

        results = await asyncio.gather(*(writer(c, 10) for c in (c1, c2, c1, c2)))
        assert sum(results) == 40
        race = await c1.stream_forward("r3", "race", 0, 1000)
        assert [e.version for e in race] == list(range(40))
    finally:
        await nc1.drain()
        await nc2.drain()
        await a.stop()
        await b.stop()
