"""The stream service's handlers (services/stream/handlers.py) over an EventStore on the
in-memory log: what a request gets back, without NATS."""

from __future__ import annotations

import pytest

from esdb_gater.services.stream import handlers as h
from esdb_gater.services.stream.store import EventStore
from esdb_gater.shared.core.errors import InvalidRequestError, WrongExpectedVersionError
from esdb_gater.shared.core.settings import QuotaSettings, Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.fake import FakeLog
from esdb_gater.shared.models import stream as m


def _ctx(store: str = "o") -> h.StreamCtx:
    settings = Settings(auto_create_stores=True, quotas=QuotaSettings(auto_created_stores=0))
    return h.StreamCtx(store=store, events=EventStore(FakeLog(), Subjects(), settings))


def _append(stream_id: str, *types: str, expected: int = m.ANY_VERSION) -> m.AppendRequest:
    events = [m.EventIn(event_type=t, data={"t": t}) for t in types]
    return m.AppendRequest(stream_id=stream_id, expected_version=expected, events=events)


async def test_append_then_read_version_exists_and_list() -> None:
    ctx = _ctx()
    assert await h.append(_append("s", "A", "B"), ctx) == m.AppendResponse(version=1, position=1, count=2)
    r = await h.append(_append("s", "C", expected=1), ctx)
    assert (r.version, r.count) == (2, 1)
    rows = await h.read(m.ReadRequest(stream_id="s"), ctx)
    assert [(e["version"], e["event_type"]) for e in rows.to_wire()["events"]] == [(0, "A"), (1, "B"), (2, "C")]
    back = await h.backward(m.BackwardRequest(stream_id="s", start_version=-1, count=2), ctx)
    assert [e["version"] for e in back.to_wire()["events"]] == [2, 1]
    assert (await h.version(m.VersionRequest(stream_id="s"), ctx)).version == 2
    assert (await h.exists(m.ExistsRequest(stream_id="s"), ctx)).exists
    assert not (await h.exists(m.ExistsRequest(stream_id="t"), ctx)).exists
    assert await h.list_(m.ListRequest(), ctx) == m.ListResponse(streams=["s"], next=None)
    with pytest.raises(WrongExpectedVersionError):
        await h.append(_append("s", "D", expected=1), ctx)


async def test_clients_cannot_write_reserved_streams_but_services_can() -> None:
    ctx = _ctx()
    with pytest.raises(InvalidRequestError) as err:
        await h.append(_append("$link:x", "A"), ctx)
    assert err.value.details["reason"] == "reserved"
    assert (await h.append_internal(_append("$link:x", "A"), ctx)).version == 0
    with pytest.raises(InvalidRequestError):
        await h.delete(m.DeleteRequest(stream_id="$link:x"), ctx)
    await h.delete_internal(m.DeleteRequest(stream_id="$link:x"), ctx)
    assert (await h.version(m.VersionRequest(stream_id="$link:x"), ctx)).version == -1


async def test_store_create_fits_the_duplicate_window_into_max_age() -> None:
    ctx = _ctx()
    info = await h.store_create(m.CreateStoreRequest(max_age_s=60), ctx)
    assert (info.created, info.max_age_s, info.duplicate_window_s, info.events) == (True, 60, 60, 0)
    again = await h.store_create(m.CreateStoreRequest(max_age_s=60), ctx)
    assert not again.created
    with pytest.raises(InvalidRequestError) as err:
        await h.store_create(m.CreateStoreRequest(max_age_s=60, duplicate_window_s=90), _ctx("p"))
    assert err.value.details["field"] == "duplicate_window_s"
    await h.append(_append("s", "A", "B"), ctx)
    info = await h.store_info(m.StoreInfoRequest(), ctx)
    assert (info.events, info.streams) == (1, 1)  # one append, one stream
