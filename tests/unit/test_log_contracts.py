"""The storage contracts of shared/log (index, stores, kv): same configs, same bytes, one owner."""

from __future__ import annotations

from typing import Any, cast

import msgpack
import pytest

from esdb_gater.shared.core.errors import StoreNotFoundError
from esdb_gater.shared.core.settings import Settings, StoreConfig
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.index import IndexCheckpoint, IndexEntry, index_stream_config
from esdb_gater.shared.log.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log, StoredMsg
from esdb_gater.shared.log.kv import (
    MULTI_LAST_LIMIT,
    kv_values,
    snapshot_key,
    snapshot_keys,
    snapshot_version,
)
from esdb_gater.shared.log.stores import (
    AUTO_CREATED,
    KnownStores,
    StoreConfigs,
    count_auto_created,
    kv_bucket_stream,
    list_stores,
    log_stream_config,
    store_config_of,
)
from esdb_gater.shared.models.peer_ops import STORE_CREATE, STORE_INFO

S = Subjects()


# --- index records ------------------------------------------------------------------------------


def test_an_index_entry_is_written_compact_and_the_old_maps_are_read() -> None:
    """ADR 0025: ``[position, version]`` / ``[position]``; the maps of earlier versions still decode."""
    assert IndexEntry("order-1", 42, 7).encode() == msgpack.packb([42, 7])
    assert IndexEntry("order-1", 42).encode() == msgpack.packb([42])  # the stream service's: the append only
    assert IndexEntry.decode(msgpack.packb({"s": "order-1", "q": 42, "v": 7})) == IndexEntry("order-1", 42, 7)
    assert IndexEntry.decode(msgpack.packb({"s": "order-1", "q": 42})) == IndexEntry("order-1", 42)


@pytest.mark.parametrize("entry", [IndexEntry(None, 1, 0), IndexEntry(None, 2**40, 2**40), IndexEntry(None, 9)])
def test_an_index_entry_round_trips(entry: IndexEntry) -> None:
    assert IndexEntry.decode(entry.encode()) == entry


def test_an_index_entry_that_is_not_one_raises() -> None:
    for data in (msgpack.packb({"q": 1}), msgpack.packb([1, 2, 3]), msgpack.packb(["x"]), b"\xc1"):
        with pytest.raises(Exception):  # noqa: B017  (msgpack raises many unrelated types)
            IndexEntry.decode(data)


def test_the_checkpoint_is_q_and_t_and_round_trips() -> None:
    ck = IndexCheckpoint(1234, 1_700_000_000_000_000_000)
    assert ck.encode() == msgpack.packb({"q": 1234, "t": 1_700_000_000_000_000_000})
    assert IndexCheckpoint.decode(ck.encode()) == ck
    assert IndexCheckpoint.decode(msgpack.packb({"q": 5})) == IndexCheckpoint(5, 0)  # written before "t"


def test_the_index_stream_config_is_one_value_per_subject_with_the_store_placement() -> None:
    assert index_stream_config(S, "orders", StoreConfig(replicas=3, storage="memory")) == {
        "name": "esdb-ix-orders",
        "description": "esdb-gater indexes of store orders",
        "subjects": ["esdb.ix.orders.>"],
        "storage": "memory",
        "num_replicas": 3,
        "max_msgs_per_subject": 1,
        "discard": "old",
        "allow_direct": True,
        "metadata": {"esdb_gater_store": "orders"},
    }


# --- the log stream -----------------------------------------------------------------------------


def test_the_log_stream_config() -> None:
    cfg = StoreConfig(replicas=1, storage="file", max_age_s=60, max_bytes=1 << 20, duplicate_window_s=30)
    assert log_stream_config(S, "orders", cfg) == {
        "name": "esdb-log-orders",
        "description": "esdb-gater event log of store orders",
        "subjects": ["esdb.log.orders.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": 1,
        "max_age": 60_000_000_000,
        "max_bytes": 1 << 20,
        "max_msgs": -1,
        "max_msgs_per_subject": -1,
        "discard": "old",
        "duplicate_window": 30_000_000_000,
        "allow_direct": True,
        "allow_atomic": True,
        "metadata": {"esdb_gater_store": "orders", "esdb_gater_layout": "1"},
    }
    auto = log_stream_config(S, "orders", cfg, auto=True)
    assert auto["metadata"] == {"esdb_gater_store": "orders", "esdb_gater_layout": "1", AUTO_CREATED: "1"}


def test_a_store_config_reads_back_from_its_log_stream_config() -> None:
    cfg = StoreConfig(replicas=3, storage="memory", max_age_s=1.5, max_bytes=10, duplicate_window_s=2, description="d")
    assert store_config_of(log_stream_config(S, "x", cfg)) == cfg


# --- KV ------------------------------------------------------------------------------------------


def test_the_kv_bucket_stream_config() -> None:
    body = kv_bucket_stream(S, "esdb-snap-o", "snapshots", StoreConfig(replicas=3), "o")
    assert body["name"] == "KV_esdb-snap-o"
    assert body["subjects"] == ["$KV.esdb-snap-o.>"]
    assert (body["num_replicas"], body["storage"], body["max_msgs_per_subject"]) == (3, "file", 1)
    assert body["metadata"] == {"esdb_gater_store": "o"}


def test_snapshot_keys_sort_by_version_and_parse_back() -> None:
    key = snapshot_key("src", "stream-1", 42)
    assert key == "src.stream-1.00000000000000000042"
    assert snapshot_version(S.kv_subject("esdb-snap-o", key)) == 42
    assert snapshot_version("a.b.latest") is None
    assert snapshot_keys(None, "stream-1") == "*.stream-1.*"
    assert snapshot_keys("src", "stream-1") == "src.stream-1.*"
    assert snapshot_key("a", "b", 9) < snapshot_key("a", "b", 10)


class FakeApi:
    """The ``$JS.API`` calls of the listing helpers, answered from dicts, pages of ``page`` items."""

    def __init__(self, page: int = 2) -> None:
        self.page = page
        self.streams: dict[str, dict[str, Any]] = {}  # name -> config
        self.kv: dict[str, StoredMsg] = {}  # subject -> last message
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = body or {}
        self.calls.append((subject, body))
        offset = int(body.get("offset", 0))
        if subject == "$JS.API.STREAM.NAMES":
            names = sorted(self.streams)
            return {"streams": names[offset : offset + self.page], "total": len(names)}
        if subject == "$JS.API.STREAM.LIST":
            infos = [{"config": c} for _, c in sorted(self.streams.items())]
            return {"streams": infos[offset : offset + self.page], "total": len(infos)}
        name = subject.removeprefix("$JS.API.STREAM.INFO.")
        if name not in self.streams:
            raise JetStreamApiError(ERR_STREAM_NOT_FOUND, "stream not found", 404)
        wanted = body.get("subjects_filter", "").removesuffix(">")
        subjects = sorted(s for s in self.kv if s.startswith(wanted))
        page = dict.fromkeys(subjects[offset : offset + self.page], 1)
        return {"config": self.streams[name], "state": {"subjects": page, "last_seq": 99}, "total": len(subjects)}

    # the typed calls of the log port (shared/log/port.py), answered by ``api``
    async def stream_names(self, *, subject: str | None = None, offset: int = 0) -> Any:
        return await self.api("$JS.API.STREAM.NAMES", {"offset": offset})

    async def list_streams(self, *, subject: str | None = None, offset: int = 0) -> Any:
        return await self.api("$JS.API.STREAM.LIST", {"offset": offset, "subject": subject})

    async def stream_info(self, stream: str, *, subjects_filter: str | None = None, offset: int = 0) -> Any:
        body = {"subjects_filter": subjects_filter, "offset": offset} if subjects_filter else None
        return await self.api(f"$JS.API.STREAM.INFO.{stream}", body)

    async def direct_batch(self, stream: str, req: dict[str, Any]) -> tuple[list[StoredMsg], int]:
        assert len(req["multi_last"]) <= MULTI_LAST_LIMIT
        return [self.kv[s] for s in req["multi_last"] if s in self.kv], 0


def _log(fake: FakeApi) -> Log:
    return cast("Log", fake)


async def test_stores_are_listed_from_the_log_stream_names_over_pages() -> None:
    fake = FakeApi()
    for name in ("esdb-log-b", "esdb-ix-b", "esdb-log-a", "KV_esdb-links", "esdb-log-c"):
        fake.streams[name] = {"name": name}
    assert await list_stores(_log(fake), S) == ["a", "b", "c"]


async def test_auto_created_stores_are_counted_from_the_log_metadata() -> None:
    fake = FakeApi()
    for name, auto in (("esdb-log-a", True), ("esdb-log-b", False), ("esdb-log-c", True), ("other", True)):
        fake.streams[name] = {"name": name, "metadata": {AUTO_CREATED: "1"} if auto else {}}
    assert await count_auto_created(_log(fake), S) == 2
    assert all(body.get("subject") == "esdb.log.>" for _, body in fake.calls)


async def test_kv_values_lists_the_live_keys_over_pages_and_leaves_deleted_ones_out() -> None:
    fake = FakeApi(page=3)
    fake.streams["KV_b"] = {"name": "KV_b"}
    for i in range(7):
        fake.kv[f"$KV.b.def.s.{i}"] = StoredMsg(f"$KV.b.def.s.{i}", i + 1, 0, {}, b"v%d" % i)
    fake.kv["$KV.b.def.s.3"] = StoredMsg("$KV.b.def.s.3", 20, 0, {"KV-Operation": "DEL"}, b"")
    fake.kv["$KV.b.lease.s.1"] = StoredMsg("$KV.b.lease.s.1", 21, 0, {}, b"l")
    rows = await kv_values(_log(fake), "b", "def.>")
    assert [(r.key, r.value, r.revision) for r in rows] == [
        (f"def.s.{i}", b"v%d" % i, i + 1) for i in range(7) if i != 3
    ]
    assert await kv_values(_log(fake), "absent", "def.>") == []


async def test_store_configs_are_read_once_and_a_missing_store_is_store_not_found() -> None:
    fake = FakeApi()
    fake.streams["esdb-log-o"] = {"name": "esdb-log-o", "num_replicas": 3, "storage": "memory"}
    configs = StoreConfigs(_log(fake), S, idle_s=60)
    assert await configs.get("o") == StoreConfig(replicas=3, storage="memory")
    assert await configs.get("o") == StoreConfig(replicas=3, storage="memory")
    assert len(fake.calls) == 1
    with pytest.raises(StoreNotFoundError):
        await configs.get("absent")


class FakePeers:
    def __init__(self, exists: bool) -> None:
        self.exists = exists
        self.calls: list[str] = []

    async def call(self, store: str, op: Any, request: Any, *, wait: float | None = None) -> Any:
        self.calls.append(op.name)
        if op is STORE_INFO and not self.exists:
            raise StoreNotFoundError("no", details={"store": store})
        self.exists = True
        return None


@pytest.mark.parametrize("auto", [False, True])
async def test_known_stores_ask_the_stream_service_and_create_only_for_writes(auto: bool) -> None:
    settings = Settings(auto_create_stores=auto)
    peers = FakePeers(exists=False)
    known = KnownStores(peers, settings)
    if not auto:
        with pytest.raises(StoreNotFoundError):
            await known.ensure("o", create=True)
        assert peers.calls == ["info"]
        return
    await known.ensure("o")  # a read creates nothing
    assert peers.calls == ["info"]
    await known.ensure("o", create=True)
    assert peers.calls == ["info", "info", STORE_CREATE.name]
    await known.ensure("o", create=True)  # remembered
    assert len(peers.calls) == 3
