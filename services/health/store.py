"""The probes behind health checks: JetStream account info, store streams, ADR-32 pings."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from esdb_gater.shared.core.errors import StoreNotFoundError, UnavailableError
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log
from esdb_gater.shared.log.stores import list_stores

__all__ = ["Probes"]


class Probes:
    def __init__(self, nc: Client, log: Log, subjects: Subjects) -> None:
        self.nc = nc
        self.log = log
        self.subjects = subjects

    def connected(self) -> bool:
        """Whether the NATS connection is up."""
        return bool(self.nc.is_connected)

    async def rtt_ms(self) -> float:
        started = time.perf_counter()
        await self.nc.flush(timeout=2)
        return round((time.perf_counter() - started) * 1000, 3)

    async def jetstream(self) -> dict[str, Any]:
        """``$JS.API.INFO``: the account's JetStream usage (raises when JetStream does not answer)."""
        info = await self.log.api("$JS.API.INFO")
        return {
            "streams": int(info.get("streams", 0)),
            "consumers": int(info.get("consumers", 0)),
            "memory": int(info.get("memory", 0)),
            "storage": int(info.get("storage", 0)),
        }

    async def stores(self) -> list[str]:
        return await list_stores(self.log, self.subjects)

    async def store(self, store: str) -> dict[str, Any]:
        """The store's log stream; ``store_not_found`` / ``unavailable`` naming the problem."""
        try:
            si = await self.log.api(f"$JS.API.STREAM.INFO.{self.subjects.log_stream(store)}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise StoreNotFoundError(f"store {store!r} does not exist", details={"store": store}) from None
            raise UnavailableError(
                f"JetStream cannot describe store {store!r}: {exc.description}",
                details={"store": store, "err_code": exc.err_code},
            ) from None
        cluster = si.get("cluster") or {}
        if cluster and not cluster.get("leader"):
            raise UnavailableError(
                f"store {store!r} has no JetStream leader right now", details={"store": store, "problem": "no_leader"}
            )
        return si

    async def ping_one(self, service: str) -> bool:
        """Whether at least one instance of ``service`` (ADR-32 name) answers ``$SRV.PING``."""
        try:
            await self.nc.request(self.subjects.srv_ping(service), b"", timeout=1.0)
        except (NoRespondersError, NatsTimeoutError):
            return False
        return True

    async def ping_all(self, window_s: float = 0.3) -> Counter[str]:
        """Instances per ADR-32 service name, from every reply to one ``$SRV.PING`` in the window."""
        inbox = self.nc.new_inbox()
        counts: Counter[str] = Counter()
        seen: set[str] = set()

        async def on_reply(msg: Msg) -> None:
            try:
                body = json.loads(msg.data)
            except ValueError:
                return
            name, iid = body.get("name"), body.get("id")
            if isinstance(name, str) and iid not in seen:
                seen.add(str(iid))
                counts[name] += 1

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(self.subjects.srv_ping(), b"", reply=inbox)
            await self.nc.flush(timeout=2)
            await asyncio.sleep(window_s)
        finally:
            await sub.unsubscribe()
        return counts
