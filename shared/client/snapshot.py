"""The snapshot service's ops (seed names; docs/api/snapshot.md), chunked snapshots included."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any, Literal

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.core.codec import JSON, MSGPACK
from esdb_gater.shared.core.errors import GatewayError
from esdb_gater.shared.models.snapshot import RecordSnapshotResponse, Snapshot
from esdb_gater.shared.models.stream import is_json_content_type

__all__ = ["SnapshotMethods"]


class SnapshotMethods(Transport):
    async def record_snapshot(
        self,
        store: str,
        source_uuid: str,
        stream_uuid: str,
        version: int,
        record: Any,
        *,
        metadata: dict[str, Any] | None = None,
        data_content_type: str = "application/json",
        chunk_size: int | None = None,
    ) -> RecordSnapshotResponse:
        """Record a snapshot (re-recording a version overwrites it). A snapshot too big for one
        message is sent in chunks (docs/api/snapshot.md#chunked-snapshots); ``chunk_size``
        forces the chunked form with chunks of that many bytes."""
        body: dict[str, Any] = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        if metadata:
            body["metadata"] = metadata
        if data_content_type != "application/json":
            body["data_content_type"] = data_content_type
        limit = self.nc.max_payload - 4096
        if chunk_size is None and len(self.codec.encode({**body, "record": record})) <= limit:
            return RecordSnapshotResponse.model_validate(
                await self.request(store, "snapshot", "record", {**body, "record": record})
            )
        if is_json_content_type(data_content_type):
            blob = JSON.encode(record)
        elif isinstance(record, bytes):
            blob = record
        else:
            raise TypeError(f"record must be bytes for data_content_type {data_content_type!r}")
        if chunk_size is None:  # base64 makes JSON bodies 4/3 the size of the chunk
            chunk_size = limit if self.codec is MSGPACK else limit * 3 // 4
        count = max(1, -(-len(blob) // chunk_size))
        upload_id = uuid.uuid4().hex
        reply: Any = None
        for i in range(count):
            part = blob[i * chunk_size : (i + 1) * chunk_size]
            chunk_body = {**body, "upload_id": upload_id, "chunk_index": i, "chunk_count": count}
            chunk_body["chunk"] = part if self.codec is MSGPACK else base64.b64encode(part).decode("ascii")
            reply = await self.request(store, "snapshot", "record", chunk_body)
        return RecordSnapshotResponse.model_validate(reply)

    async def _snapshot_of(self, store: str, reply: dict[str, Any]) -> Snapshot:
        """A read reply as a Snapshot with its data: chunks fetched and joined, base64 decoded."""
        ctype = reply.get("data_content_type", "application/json")
        chunks = reply.get("chunks")
        if chunks:
            parts = []
            for i in range(int(chunks["count"])):
                body = {
                    "source_uuid": reply["source_uuid"],
                    "stream_uuid": reply["stream_uuid"],
                    "version": reply["version"],
                    "upload_id": chunks["upload_id"],
                    "chunk_index": i,
                }
                part = (await self.request(store, "snapshot", "read_chunk", body))["chunk"]
                parts.append(part if isinstance(part, bytes) else base64.b64decode(part))
            blob = b"".join(parts)
            digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).decode("ascii")
            if digest != chunks["digest"]:
                raise GatewayError("the snapshot's chunks do not match its digest", details={"digest": digest})
            reply["data"] = JSON.decode(blob) if is_json_content_type(ctype) else blob
        elif isinstance(reply.get("data"), str) and not is_json_content_type(ctype):
            reply["data"] = base64.b64decode(reply["data"])
        return Snapshot.model_validate(reply)

    async def read_snapshot(
        self, store: str, source_uuid: str, stream_uuid: str, version: int | Literal["latest"] = "latest"
    ) -> Snapshot:
        """The snapshot at ``version``, or the highest one; ``NotFoundError`` when there is none."""
        body = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        return await self._snapshot_of(store, await self.request(store, "snapshot", "read", body))

    async def delete_snapshot(self, store: str, source_uuid: str, stream_uuid: str, version: int) -> None:
        body = {"source_uuid": source_uuid, "stream_uuid": stream_uuid, "version": version}
        await self.request(store, "snapshot", "delete", body)

    async def list_snapshots(
        self, store: str, source_uuid: str, stream_uuid: str, *, include_data: bool = True
    ) -> list[Snapshot]:
        """Every snapshot of the stream, ascending by version (chunked ones fetched whole when
        ``include_data``)."""
        body: dict[str, Any] = {"source_uuid": source_uuid, "stream_uuid": stream_uuid}
        if not include_data:
            body["include_data"] = False
        reply = await self.request(store, "snapshot", "list", body)
        if not include_data:
            return [Snapshot.model_validate(s) for s in reply["snapshots"]]
        return [await self._snapshot_of(store, s) for s in reply["snapshots"]]
