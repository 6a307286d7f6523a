"""The stream service's ops: events (seed names) and stores (docs/api/stream.md)."""

from __future__ import annotations

from typing import Any

from esdb_gater.shared.client.transport import Transport, decode_events
from esdb_gater.shared.core.ids import new_event_id
from esdb_gater.shared.models.stream import (
    AllEvent,
    AppendMultiResponse,
    AppendResponse,
    CheckpointResponse,
    ReadAllResponse,
    RecordedEvent,
    ReindexResponse,
    StoreInfoResponse,
)

__all__ = ["StreamMethods"]


def _raw(body: dict[str, Any], raw: bool) -> dict[str, Any]:
    """Reads come back upcast to the current schema versions; ``raw=True`` asks for the events
    as stored."""
    if raw:
        body["raw"] = True
    return body


class StreamMethods(Transport):
    async def _stream(self, store: str, op: str, body: dict[str, Any]) -> Any:
        return await self.request(store, "stream", op, body)

    async def append_events(self, store: str, stream_id: str, *args: Any) -> AppendResponse:
        """``append_events(store, stream_id, events)`` (any version) or
        ``append_events(store, stream_id, expected_version, events)``."""
        if len(args) == 1:
            expected, events = -2, args[0]
        elif len(args) == 2:
            expected, events = args
        else:
            raise TypeError("append_events(store, stream_id, [expected_version,] events)")
        events = list(events)
        if self.retry is not None:
            # Give every event an id before the first try, so a retry after a lost reply is
            # recognised as the same append (idempotent) instead of being stored twice.
            events = [e if e.get("event_id") else {**e, "event_id": new_event_id()} for e in events]
        reply = await self._stream(
            store, "append", {"stream_id": stream_id, "expected_version": expected, "events": events}
        )
        return AppendResponse.model_validate(reply)

    async def get_events(
        self,
        store: str,
        stream_id: str,
        start_version: int,
        count: int,
        direction: str = "forward",
        *,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "start_version": start_version, "count": count, "direction": direction}
        return decode_events(await self._stream(store, "read", _raw(body, raw)))

    async def stream_forward(
        self, store: str, stream_id: str, start_version: int, count: int, *, raw: bool = False
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "start_version": start_version, "count": count}
        return decode_events(await self._stream(store, "forward", _raw(body, raw)))

    async def stream_backward(
        self, store: str, stream_id: str, start_version: int, count: int, *, raw: bool = False
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "start_version": start_version, "count": count}
        return decode_events(await self._stream(store, "backward", _raw(body, raw)))

    async def get_version(self, store: str, stream_id: str) -> int:
        return int((await self._stream(store, "version", {"stream_id": stream_id}))["version"])

    async def stream_exists(self, store: str, stream_id: str) -> bool:
        return bool((await self._stream(store, "exists", {"stream_id": stream_id}))["exists"])

    async def get_streams(self, store: str, *, page_size: int = 1000) -> list[str]:
        """Every stream id of the store, sorted (follows the pages)."""
        out: list[str] = []
        cursor: str | None = None
        while True:
            streams, cursor = await self.list_streams(store, cursor=cursor, limit=page_size)
            out.extend(streams)
            if cursor is None:
                return out

    async def list_streams(
        self, store: str, *, cursor: str | None = None, limit: int = 1000
    ) -> tuple[list[str], str | None]:
        """One page of stream ids and the cursor of the next page (None on the last)."""
        body: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            body["cursor"] = cursor
        reply = await self._stream(store, "list", body)
        return list(reply["streams"]), reply.get("next")

    async def delete_stream(self, store: str, stream_id: str) -> None:
        await self._stream(store, "delete", {"stream_id": stream_id})

    async def read_until(
        self,
        store: str,
        stream_id: str,
        timestamp: int,
        *,
        direction: str = "forward",
        limit: int = 1000,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "timestamp": timestamp, "direction": direction, "limit": limit}
        return decode_events(await self._stream(store, "read_until", _raw(body, raw)))

    async def read_range(
        self,
        store: str,
        stream_id: str,
        from_ts: int,
        to_ts: int,
        *,
        direction: str = "forward",
        limit: int = 1000,
        raw: bool = False,
    ) -> list[RecordedEvent]:
        body = {"stream_id": stream_id, "from_ts": from_ts, "to_ts": to_ts, "direction": direction, "limit": limit}
        return decode_events(await self._stream(store, "read_range", _raw(body, raw)))

    async def version_at(self, store: str, stream_id: str, timestamp: int) -> int:
        reply = await self._stream(store, "version_at", {"stream_id": stream_id, "timestamp": timestamp})
        return int(reply["version"])

    # --- transactions and the store-wide read (ADR 0023) ----------------------------------------
    async def append_multi(
        self,
        store: str,
        appends: list[dict[str, Any]],
        *,
        checkpoint: tuple[str, int] | None = None,
    ) -> AppendMultiResponse:
        """Append to several streams atomically: ``appends`` is a list of
        ``{"stream_id", "expected_version", "events"}``; either every event is stored or none.
        ``checkpoint=(name, position)`` is stored in the same transaction (compare-and-set: it
        must be greater than the stored one). A conflict raises ``WrongExpectedVersionError``
        whose ``details`` name the streams (or the checkpoint) that failed."""
        appends = [dict(a) for a in appends]
        if self.retry is not None:  # ids before the first try: a retry is recognised as the same transaction
            for a in appends:
                a["events"] = [e if e.get("event_id") else {**e, "event_id": new_event_id()} for e in a["events"]]
        body: dict[str, Any] = {"appends": appends}
        if checkpoint is not None:
            body["checkpoint"] = {"name": checkpoint[0], "position": checkpoint[1]}
        return AppendMultiResponse.model_validate(await self._stream(store, "append_multi", body))

    async def checkpoint(self, store: str, name: str) -> int | None:
        """The position stored under ``name`` by ``append_multi(checkpoint=…)``, or None."""
        return CheckpointResponse.model_validate(await self._stream(store, "checkpoint", {"name": name})).position

    async def read_all(
        self,
        store: str,
        *,
        from_id: int | None = None,
        inclusive: bool = True,
        to: int | None = None,
        direction: str = "forward",
        limit: int = 100,
        event_types: list[str] | None = None,
        stream_prefix: str | None = None,
        raw: bool = False,
    ) -> ReadAllResponse:
        """One page of the store-wide read: events of every stream in log order, each with its
        ``notification_id``; pass ``reply.next`` as ``from_id`` with ``inclusive=False`` for the
        next page (None: nothing more)."""
        body: dict[str, Any] = {"from": from_id, "inclusive": inclusive, "direction": direction, "limit": limit}
        if to is not None:
            body["to"] = to
        if event_types is not None:
            body["event_types"] = event_types
        if stream_prefix is not None:
            body["stream_prefix"] = stream_prefix
        reply = await self._stream(store, "read_all", _raw(body, raw))
        events = decode_events(reply, AllEvent)
        return ReadAllResponse(
            events=events, next=reply.get("next"), last_notification_id=reply.get("last_notification_id")
        )

    # --- stores (the stream service's store.* ops) ---------------------------------------------
    async def create_store(self, store: str, **config: Any) -> StoreInfoResponse:
        """``replicas``, ``storage`` ("file"|"memory"), ``max_age_s``, ``max_bytes``, ``duplicate_window_s``."""
        return StoreInfoResponse.model_validate(await self.request(store, "store", "create", config))

    async def store_info(self, store: str) -> StoreInfoResponse:
        return StoreInfoResponse.model_validate(await self.request(store, "store", "info", {}))

    async def reindex_store(self, store: str) -> ReindexResponse:
        """Rebuild the store's event-id index from its log (admin; ADR 0017)."""
        return ReindexResponse.model_validate(await self.request(store, "store", "reindex", {}))
