"""A real 3-node cluster: an R3 store, two service instances on different nodes, and reads
that see every acknowledged append at once (read-your-writes across instances)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from esdb_gater.services import start_services
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import GatewayTimeoutError, UnavailableError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.tooling.natsserver import NatsCluster


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


async def test_r3_append_multi_and_read_all(cluster: NatsCluster) -> None:
    """Atomic batches on an R3 log (issue 12): all or nothing, read back through another node."""
    a = await start_services(["stream"], Settings(nats_url=cluster.urls[0]))
    b = await start_services(["stream"], Settings(nats_url=cluster.urls[1]))
    nc1 = await nats.connect(cluster.urls[2])
    nc2 = await nats.connect(cluster.urls[1])

    async def call(nc: Client, op: str, body: dict[str, Any]) -> tuple[bool, Any]:
        msg = await nc.request(f"esdb.api.r3m.stream.{op}", json.dumps(body).encode(), timeout=10)
        return not (msg.headers or {}).get("Nats-Service-Error-Code"), json.loads(msg.data)

    try:
        c1 = GaterClient(nc1, timeout=10)
        for _ in range(100):
            try:
                await c1.create_store("r3m", replicas=3)
                break
            except (UnavailableError, GatewayTimeoutError):
                await asyncio.sleep(0.2)
        total = 0
        for i in range(20):
            appends = [
                {
                    "stream_id": f"acct-{j}",
                    "expected_version": (j + 1) * i - 1,
                    "events": [{"event_type": "T", "data": i}] * (j + 1),
                }
                for j in range(3)
            ]
            ok, r = await call(nc1, "append_multi", {"appends": appends, "checkpoint": {"name": "p", "position": i}})
            assert ok, r
            total += 6
            assert [x["version"] for x in r["results"]] == [i, 2 * i + 1, 3 * i + 2]
            # through the other node and instance at once: every stream and the whole log
            ok, page = await call(nc2, "read_all", {"direction": "backward", "limit": 6})
            assert ok and [e["data"] for e in page["events"]] == [i] * 6, page
            assert page["last_notification_id"] == page["events"][0]["notification_id"]
        ok, err = await call(
            nc2,
            "append_multi",
            {
                "appends": [
                    {"stream_id": "acct-0", "expected_version": 19, "events": [{"event_type": "T"}]},
                    {"stream_id": "acct-1", "expected_version": 3, "events": [{"event_type": "T"}]},
                ]
            },
        )
        assert not ok and err["error"]["details"]["conflicts"] == [
            {"stream_id": "acct-1", "expected_version": 3, "actual_version": 39}
        ]

        # more than one Direct Get batch (1000 messages) of log: pages through any replica stay whole
        async def bulk(i: int) -> None:
            appends = [{"stream_id": f"bulk-{j}", "events": [{"event_type": "B", "data": i}]} for j in range(3)]
            ok, r = await call(nc1 if i % 2 else nc2, "append_multi", {"appends": appends})
            assert ok, r

        for k in range(0, 400, 40):
            await asyncio.gather(*(bulk(i) for i in range(k, k + 40)))
        total += 1200
        ok, page = await call(nc2, "read_all", {"limit": 10000})
        assert ok and len(page["events"]) == total and page["next"] is None, (len(page["events"]), total)
        ok, back = await call(nc1, "read_all", {"limit": 10000, "direction": "backward"})
        assert ok and back["events"] == page["events"][::-1]
        assert (await call(nc1, "checkpoint", {"name": "p"}))[1]["position"] == 19
    finally:
        await nc1.drain()
        await nc2.drain()
        await a.stop()
        await b.stop()
