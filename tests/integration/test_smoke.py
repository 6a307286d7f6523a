import pytest

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import WrongExpectedVersionError


async def test_append_and_read_round_trip(client: GaterClient, store: str, stream_id: str) -> None:
    r = await client.append_events(store, stream_id, -1, [{"event_type": "A", "data": {"n": 1}}])
    assert (r.version, r.count) == (0, 1)
    with pytest.raises(WrongExpectedVersionError) as ei:
        await client.append_events(store, stream_id, -1, [{"event_type": "A", "data": {"n": 1}}])
    assert ei.value.details["actual"] == 0
    events = await client.stream_forward(store, stream_id, 0, 10)
    assert [e.data for e in events] == [{"n": 1}]
