"""The snapshot service over the wire (SPEC.md §5): every op and error through ``GaterClient`` and
raw requests, both uuids in the key, overwrite, ``latest`` whatever the insertion order, hostile
uuids, a 3 MiB snapshot as one request, and snapshots beyond max_payload through the chunked
form (docs/api/snapshot.md)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import ObjectNotFoundError

from esdb_gater.services import start_services
from esdb_gater.services.snapshot import service
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import NotFoundError, StoreNotFoundError
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.runtime.runner import Running
from tests.conftest import Wire

SRC = "source-1"


def _ids(stream: str, version: int | str = 1, source: str = SRC) -> dict[str, Any]:
    return {"source_uuid": source, "stream_uuid": stream, "version": version}


def test_snapshot_subjects_are_pinned() -> None:
    spec = service.spec(snapshots=None)  # type: ignore[arg-type]  # the table needs no store
    assert spec.name == "esdb-snapshot" and spec.token == "snapshot"
    assert [Subjects().api_endpoint(spec.token, op.name) for op in spec.ops] == [
        "esdb.api.*.snapshot.record",
        "esdb.api.*.snapshot.read",
        "esdb.api.*.snapshot.read_chunk",
        "esdb.api.*.snapshot.delete",
        "esdb.api.*.snapshot.list",
    ]
    assert all(op.description for op in spec.ops)


async def test_record_read_list_delete(client: GaterClient, store: str, stream_id: str) -> None:
    r = await client.record_snapshot(store, SRC, stream_id, 3, {"total": 30}, metadata={"by": "test"})
    assert (r.version, r.complete, r.chunks_received) == (3, True, 1)
    assert r.size and r.size > 0 and r.timestamp and r.timestamp > 0
    snap = await client.read_snapshot(store, SRC, stream_id, 3)
    assert (snap.source_uuid, snap.stream_uuid, snap.version) == (SRC, stream_id, 3)
    assert snap.data == {"total": 30} and snap.metadata == {"by": "test"} and snap.chunks is None
    assert snap.timestamp == r.timestamp
    await client.record_snapshot(store, SRC, stream_id, 7, [1, 2, 3])
    assert [s.version for s in await client.list_snapshots(store, SRC, stream_id)] == [3, 7]
    await client.delete_snapshot(store, SRC, stream_id, 3)
    await client.delete_snapshot(store, SRC, stream_id, 3)  # deleting a missing one is fine
    listed = await client.list_snapshots(store, SRC, stream_id)
    assert [(s.version, s.data) for s in listed] == [(7, [1, 2, 3])]
    with pytest.raises(NotFoundError) as exc:
        await client.read_snapshot(store, SRC, stream_id, 3)
    assert exc.value.details == {"source_uuid": SRC, "stream_uuid": stream_id, "version": 3}


async def test_rerecording_a_version_overwrites(client: GaterClient, store: str, stream_id: str) -> None:
    await client.record_snapshot(store, SRC, stream_id, 5, {"v": "old"}, metadata={"n": 1})
    await client.record_snapshot(store, SRC, stream_id, 5, {"v": "new"})
    snap = await client.read_snapshot(store, SRC, stream_id, 5)
    assert snap.data == {"v": "new"} and snap.metadata == {}
    assert len(await client.list_snapshots(store, SRC, stream_id)) == 1


async def test_latest_is_the_highest_version_whatever_the_order(
    client: GaterClient, store: str, stream_id: str
) -> None:
    for v in (20, 5, 100, 9, 99):
        await client.record_snapshot(store, SRC, stream_id, v, {"at": v})
    assert (await client.read_snapshot(store, SRC, stream_id)).data == {"at": 100}
    assert (await client.read_snapshot(store, SRC, stream_id, "latest")).version == 100
    await client.delete_snapshot(store, SRC, stream_id, 100)
    assert (await client.read_snapshot(store, SRC, stream_id)).version == 99
    assert [s.version for s in await client.list_snapshots(store, SRC, stream_id)] == [5, 9, 20, 99]


async def test_latest_of_nothing_is_not_found(client: GaterClient, store: str, stream_id: str) -> None:
    with pytest.raises(NotFoundError) as exc:
        await client.read_snapshot(store, SRC, stream_id)
    assert exc.value.details["version"] == "latest"
    assert await client.list_snapshots(store, SRC, stream_id) == []


async def test_both_uuids_matter(client: GaterClient, store: str) -> None:
    await client.record_snapshot(store, "src-a", "agg", 1, "a")
    await client.record_snapshot(store, "src-b", "agg", 1, "b")
    await client.record_snapshot(store, "src-a", "agg-2", 1, "a2")
    assert (await client.read_snapshot(store, "src-a", "agg", 1)).data == "a"
    assert (await client.read_snapshot(store, "src-b", "agg", 1)).data == "b"
    assert (await client.read_snapshot(store, "src-a", "agg-2", 1)).data == "a2"
    await client.delete_snapshot(store, "src-a", "agg", 1)
    assert (await client.read_snapshot(store, "src-b", "agg", 1)).data == "b"
    with pytest.raises(NotFoundError):
        await client.read_snapshot(store, "src-b", "agg-2", 1)


HOSTILE = [
    ("a.b", "c"),
    ("a", "b.c"),
    ("*", ">"),
    (">", "*"),
    ("%41", "x"),
    ("A", "x"),
    ("=41", "x"),
    ("a b", "ü/$KV.x.>"),
    ("a", "b"),
    ("a\u0000b", "\n"),
]


async def test_hostile_uuids_cannot_reach_another_key(client: GaterClient, store: str) -> None:
    for i, (src, stream) in enumerate(HOSTILE):
        await client.record_snapshot(store, src, stream, 1, {"i": i})
        await client.record_snapshot(store, src, stream, 2, {"i": i})
    for i, (src, stream) in enumerate(HOSTILE):
        snaps = await client.list_snapshots(store, src, stream)
        assert [(s.source_uuid, s.stream_uuid, s.version, s.data) for s in snaps] == [
            (src, stream, 1, {"i": i}),
            (src, stream, 2, {"i": i}),
        ]
        assert (await client.read_snapshot(store, src, stream)).data == {"i": i}
    await client.delete_snapshot(store, "a", "b", 2)
    assert (await client.read_snapshot(store, "a.b", "c")).version == 2
    assert (await client.read_snapshot(store, "a", "b.c")).version == 2


async def test_binary_snapshots(client: GaterClient, msgpack_client: GaterClient, store: str, stream_id: str) -> None:
    blob = os.urandom(1000)
    await client.record_snapshot(store, SRC, stream_id, 1, blob, data_content_type="application/octet-stream")
    await msgpack_client.record_snapshot(store, SRC, stream_id, 2, blob, data_content_type="application/x-state")
    for c in (client, msgpack_client):
        snap = await c.read_snapshot(store, SRC, stream_id, 1)
        assert snap.data == blob and snap.data_content_type == "application/octet-stream"
        assert (await c.read_snapshot(store, SRC, stream_id, 2)).data == blob


async def test_a_3_mib_snapshot_is_one_plain_request(client: GaterClient, store: str, stream_id: str) -> None:
    record = {"rows": [{"id": i, "text": "x" * 100} for i in range(3 * 1024 * 1024 // 100)]}
    r = await client.record_snapshot(store, SRC, stream_id, 1, record)
    assert r.chunks_received == 1 and r.complete
    snap = await client.read_snapshot(store, SRC, stream_id)
    assert snap.chunks is None and snap.data == record
    assert snap.size > 3 * 1024 * 1024


async def test_a_snapshot_beyond_max_payload_is_chunked_into_the_object_store(
    msgpack_client: GaterClient, nc: Client, store: str, stream_id: str
) -> None:
    blob = os.urandom(nc.max_payload + 1024 * 1024)
    r = await msgpack_client.record_snapshot(store, SRC, stream_id, 4, blob, data_content_type="application/x-blob")
    assert r.complete and r.chunks_received == 2 and r.size == len(blob)
    snap = await msgpack_client.read_snapshot(store, SRC, stream_id)
    assert snap.version == 4 and snap.data == blob and snap.chunks is not None and snap.chunks.count == 2
    # stored whole, in the Object Store: any Object Store client reads it back (digest checked)
    obs = await nc.jetstream().object_store(f"esdb-snapobj-{store}")
    names = [o.name for o in await obs.list()]
    assert len(names) == 1
    assert (await obs.get(names[0])).data == blob
    # overwritten by a plain record: the object goes away
    await msgpack_client.record_snapshot(store, SRC, stream_id, 4, {"small": True})
    assert (await msgpack_client.read_snapshot(store, SRC, stream_id)).data == {"small": True}
    with pytest.raises(ObjectNotFoundError):
        await obs.get(names[0])


def _chunk(stream: str, upload: str, i: int, n: int, part: bytes, **extra: Any) -> dict[str, Any]:
    return {
        **_ids(stream, 9),
        "upload_id": upload,
        "chunk_index": i,
        "chunk_count": n,
        "chunk": base64.b64encode(part).decode(),
        **extra,
    }


async def test_chunked_form_over_the_wire(wire: Wire, store: str, stream_id: str) -> None:
    data = b'{"big": "' + b"y" * 25 + b'"}'
    parts = [data[0:12], data[12:24], data[24:]]
    upload = uuid.uuid4().hex
    first = (await wire.call(store, "record", _chunk(stream_id, upload, 0, 3, parts[0]), service="snapshot")).ok()
    assert first == {**_ids(stream_id, 9), "complete": False, "chunks_received": 1, "size": None, "timestamp": None}
    # a resend of a stored chunk is acknowledged, not stored twice
    again = await wire.call(store, "record", _chunk(stream_id, upload, 0, 3, parts[0]), service="snapshot")
    assert again.ok()["chunks_received"] == 1
    skip = await wire.call(store, "record", _chunk(stream_id, upload, 2, 3, parts[2]), service="snapshot")
    assert skip.error("invalid_request") == {"field": "chunk_index", "reason": "out of order", "expected": 1}
    recount = await wire.call(store, "record", _chunk(stream_id, upload, 1, 4, parts[1]), service="snapshot")
    assert recount.error("invalid_request")["field"] == "chunk_count"
    await wire.call(store, "record", _chunk(stream_id, upload, 1, 3, parts[1]), service="snapshot")
    # the snapshot is not there until the last chunk
    missing = await wire.call(store, "read", _ids(stream_id, 9), service="snapshot")
    missing.error("not_found")
    last = await wire.call(
        store, "record", _chunk(stream_id, upload, 2, 3, parts[2], metadata={"k": 1}), service="snapshot"
    )
    done = last.ok()
    assert done["complete"] and done["chunks_received"] == 3 and done["size"] == len(data)
    read = (await wire.call(store, "read", _ids(stream_id, "latest"), service="snapshot")).ok()
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    assert read["data"] is None and read["metadata"] == {"k": 1} and read["size"] == len(data)
    assert read["chunks"] == {"upload_id": upload, "count": 3, "size": len(data), "digest": digest}
    got = b""
    for i in range(3):
        body = {**_ids(stream_id, 9), "upload_id": upload, "chunk_index": i}
        reply = (await wire.call(store, "read_chunk", body, service="snapshot")).ok()
        assert reply["chunk_index"] == i
        got += base64.b64decode(reply["chunk"])
    assert got == data
    # the list shows it with its chunks; a resend of the last chunk changes nothing
    listed = (await wire.call(store, "list", {"source_uuid": SRC, "stream_uuid": stream_id}, service="snapshot")).ok()
    assert [s["chunks"]["upload_id"] for s in listed["snapshots"]] == [upload]
    resent = await wire.call(store, "record", _chunk(stream_id, upload, 2, 3, parts[2]), service="snapshot")
    assert resent.ok()["timestamp"] == done["timestamp"]
    reuse = await wire.call(store, "record", _chunk(stream_id, upload, 0, 3, parts[0]), service="snapshot")
    assert reuse.error("invalid_request")["field"] == "upload_id"
    past = await wire.call(
        store, "read_chunk", {**_ids(stream_id, 9), "upload_id": upload, "chunk_index": 3}, service="snapshot"
    )
    assert past.error("invalid_request")["field"] == "chunk_index"
    stale = await wire.call(
        store, "read_chunk", {**_ids(stream_id, 9), "upload_id": "0" * 32, "chunk_index": 0}, service="snapshot"
    )
    stale.error("not_found")
    # delete removes the snapshot and its object
    (await wire.call(store, "delete", _ids(stream_id, 9), service="snapshot")).ok()
    gone = await wire.call(
        store, "read_chunk", {**_ids(stream_id, 9), "upload_id": upload, "chunk_index": 0}, service="snapshot"
    )
    gone.error("not_found")


async def test_chunked_read_through_the_client(client: GaterClient, store: str, stream_id: str) -> None:
    record = {"items": list(range(500))}
    r = await client.record_snapshot(store, SRC, stream_id, 2, record, chunk_size=300)
    assert r.complete and r.chunks_received > 3
    snap = await client.read_snapshot(store, SRC, stream_id, 2)
    assert snap.data == record and snap.chunks is not None
    listed = await client.list_snapshots(store, SRC, stream_id)
    assert listed[0].data == record
    bare = await client.list_snapshots(store, SRC, stream_id, include_data=False)
    assert bare[0].data is None and bare[0].size == snap.size


BAD: list[tuple[str, str, dict[str, Any], str]] = [
    ("no-record", "record", _ids("s"), "body"),
    ("record-and-chunk", "record", {**_ids("s"), "record": 1, **_chunk("s", "u" * 8, 0, 1, b"x")}, "body"),
    ("part-of-chunk-form", "record", {**_ids("s"), "upload_id": "u" * 8, "chunk_index": 0}, "body"),
    ("short-upload-id", "record", _chunk("s", "abc", 0, 1, b"x"), "upload_id"),
    ("index-past-count", "record", _chunk("s", "u" * 8, 2, 2, b"x"), "body"),
    ("chunk-not-base64", "record", {**_chunk("s", "u" * 8, 0, 1, b"x"), "chunk": "***"}, "chunk"),
    ("binary-not-base64", "record", {**_ids("s"), "record": "***", "data_content_type": "a/b"}, "body"),
    ("empty-source", "record", {**_ids("s", source=""), "record": 1}, "source_uuid"),
    ("long-stream", "record", {**_ids("é" * 129), "record": 1}, "stream_uuid"),
    ("negative-version", "record", {**_ids("s", -1), "record": 1}, "version"),
    ("unknown-field", "record", {**_ids("s"), "record": 1, "verison": 2}, "verison"),
    ("latest-typo", "read", _ids("s", "last"), "version"),
    ("delete-latest", "delete", _ids("s", "latest"), "version"),
    ("list-without-stream", "list", {"source_uuid": "x"}, "stream_uuid"),
    ("chunk-without-upload", "read_chunk", {**_ids("s"), "chunk_index": 0}, "upload_id"),
]


@pytest.mark.parametrize(("op", "body", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_bad_requests_are_invalid_request(wire: Wire, store: str, op: str, body: Any, field: str) -> None:
    details = (await wire.call(store, op, body, service="snapshot")).error("invalid_request")
    assert details["field"] == field or details["field"].startswith(field), details


async def test_msgpack_chunks_are_bin(wire: Wire, store: str, stream_id: str) -> None:
    body = {**_ids(stream_id, 1), "upload_id": "m" * 10, "chunk_index": 0, "chunk_count": 1, "chunk": b"[1,2]"}
    assert (await wire.call(store, "record", body, service="snapshot", codec="msgpack")).ok()["complete"]
    read = (await wire.call(store, "read", _ids(stream_id, 1), service="snapshot", codec="msgpack")).ok()
    chunk = {**_ids(stream_id, 1), "upload_id": "m" * 10, "chunk_index": 0}
    reply = (await wire.call(store, "read_chunk", chunk, service="snapshot", codec="msgpack")).ok()
    assert read["chunks"]["count"] == 1 and reply["chunk"] == b"[1,2]"


# --- stores that must exist ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def strict(nats_url: str) -> AsyncIterator[Running]:
    """Stream and snapshot services that do not create stores on first use (prefix ``strict``)."""
    settings = Settings(nats_url=nats_url, subject_prefix="strict", service_name_prefix="strict")
    running = await start_services(["stream", "snapshot"], settings)
    try:
        yield running
    finally:
        await running.stop()


async def test_store_must_exist_without_auto_create(strict: Running, nc: Client, store: str) -> None:
    client = GaterClient(nc, prefix="strict")
    with pytest.raises(StoreNotFoundError) as exc:
        await client.record_snapshot(store, SRC, "s", 1, {})
    assert exc.value.details == {"store": store}
    for call in (
        client.read_snapshot(store, SRC, "s"),
        client.list_snapshots(store, SRC, "s"),
        client.delete_snapshot(store, SRC, "s", 1),
    ):
        with pytest.raises(StoreNotFoundError):
            await call
    await client.create_store(store)
    await client.record_snapshot(store, SRC, "s", 1, {"ok": True})
    assert (await client.read_snapshot(store, SRC, "s")).data == {"ok": True}


async def test_store_token_is_checked(wire: Wire) -> None:
    reply = await wire.call("_", "read", _ids("s"), service="snapshot")
    assert reply.error("invalid_request")["field"] == "store"
