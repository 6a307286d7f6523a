"""What the library's contract does not cover: several aggregates in one insert, writers that
do not share a version cache, snapshots with gaps, paging, events of other clients, a
subscription woken by polling, resends, and the configuration."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.utils import Environment

import eventsourcing_gater
from esdb_gater.eventsourcing import GaterApplicationRecorder, GaterFactory
from esdb_gater.eventsourcing.config import GaterConfig, purpose_store, sanitise_store
from esdb_gater.eventsourcing.recorders import NOTIFICATION_ID_SHIFT
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core import connection
from tests.eventsourcing.conftest import Gateway, fresh_store


def ev(originator_id: UUID | str, version: int, topic: str = "topic", state: bytes = b"state") -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=state)


@pytest.fixture
def store() -> str:
    return fresh_store()


@pytest.fixture
def factory(es_gateway: Gateway, store: str) -> Iterator[GaterFactory]:
    f = GaterFactory(Environment("es", es_gateway.env(store)))
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def recorder(factory: GaterFactory) -> GaterApplicationRecorder:
    r = factory.application_recorder()
    assert isinstance(r, GaterApplicationRecorder)
    return r


def test_an_insert_of_several_aggregates_is_atomic(recorder: GaterApplicationRecorder) -> None:
    a, b = uuid4(), uuid4()
    recorder.insert_events([ev(b, 1)])
    with pytest.raises(IntegrityError):
        recorder.insert_events([ev(a, 1), ev(a, 2), ev(b, 1)])  # b 1 exists: nothing is stored
    assert recorder.select_events(a) == []
    ids = recorder.insert_events([ev(a, 1), ev(b, 2), ev(a, 2)])
    assert isinstance(ids, list) and len(ids) == 3
    # per event, in the caller's order; each aggregate's events consecutive (one commit each)
    assert ids[2] == ids[0] + 1 and len(set(ids)) == 3
    notifications = recorder.select_notifications(None, 10)[1:]
    assert {(n.originator_id, n.originator_version): n.id for n in notifications} == {
        (a, 1): ids[0],
        (b, 2): ids[1],
        (a, 2): ids[2],
    }
    assert [n.id for n in notifications] == sorted(ids)


def test_a_second_writer_learns_the_stream_and_never_stores_a_version_twice(
    es_gateway: Gateway, store: str, recorder: GaterApplicationRecorder
) -> None:
    a = uuid4()
    recorder.insert_events([ev(a, 1), ev(a, 2)])
    other = GaterFactory(Environment("es", es_gateway.env(store)))
    try:
        r2 = other.application_recorder()
        with pytest.raises(IntegrityError):
            r2.insert_events([ev(a, 2)])  # it does not know the stream: expects none, learns, refuses
        r2.insert_events([ev(a, 3)])
        with pytest.raises(IntegrityError):
            recorder.insert_events([ev(a, 3)])  # the first writer's cache is stale: conflict, not a duplicate
        recorder.insert_events([ev(a, 4)])
        assert [e.originator_version for e in r2.select_events(a)] == [1, 2, 3, 4]
    finally:
        other.close()


def test_concurrent_writers_of_one_aggregate_store_each_version_once(recorder: GaterApplicationRecorder) -> None:
    a = uuid4()
    recorder.insert_events([ev(a, 0)])
    outcomes: list[str] = []

    def write() -> None:
        try:
            recorder.insert_events([ev(a, 1, state=threading.current_thread().name.encode())])
            outcomes.append("ok")
        except IntegrityError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert [e.originator_version for e in recorder.select_events(a)] == [0, 1]


def test_snapshots_with_gaps_stay_out_of_the_notification_log(factory: GaterFactory, store: str) -> None:
    events = factory.application_recorder()
    snapshots = factory.aggregate_recorder(purpose="snapshots")
    assert getattr(snapshots, "store", None) == purpose_store(store, "snapshots") == f"{store}-snapshots"
    a = uuid4()
    events.insert_events([ev(a, v) for v in range(1, 9)])
    for v in (2, 4, 7):
        snapshots.insert_events([ev(a, v, topic="Snapshot")])
    with pytest.raises(IntegrityError):
        snapshots.insert_events([ev(a, 4, topic="Snapshot")])
    with pytest.raises(IntegrityError):
        snapshots.insert_events([ev(a, 3, topic="Snapshot")])  # below the last one: refused, as out of order
    snapshots.insert_events([ev(a, 11, topic="Snapshot")])
    pick = snapshots.select_events(a, lte=6, desc=True, limit=1)
    assert [s.originator_version for s in pick] == [4]
    assert [s.originator_version for s in snapshots.select_events(a, desc=True, limit=1)] == [11]
    assert [s.originator_version for s in snapshots.select_events(a, gt=2, lte=7)] == [4, 7]
    assert [s.originator_version for s in snapshots.select_events(a, gt=4, desc=True)] == [11, 7]
    assert [s.originator_version for s in events.select_events(a, gt=4, limit=2)] == [5, 6]
    assert {n.topic for n in events.select_notifications(None, 100)} == {"topic"}  # no snapshot in the log


def test_long_streams_are_read_in_pages(recorder: GaterApplicationRecorder) -> None:
    a = uuid4()
    for first in (0, 1000, 2000):
        recorder.insert_events([ev(a, v) for v in range(first, first + (1000 if first < 2000 else 500))])
    assert [e.originator_version for e in recorder.select_events(a)] == list(range(2500))
    assert [e.originator_version for e in recorder.select_events(a, gt=2399)] == list(range(2400, 2500))
    assert [e.originator_version for e in recorder.select_events(a, lte=1499, desc=True, limit=3)] == [1499, 1498, 1497]
    assert len(recorder.select_events(a, gt=10, lte=1900)) == 1890
    notes = recorder.select_notifications(None, 2400)  # more than one read_all page of events
    assert len(notes) == 2400 and [n.originator_version for n in notes] == list(range(2400))
    assert len(recorder.select_notifications(notes[-1].id, 5000, inclusive_of_start=False)) == 100
    everything = recorder.select_notifications(None, 3000)
    assert recorder.max_notification_id() == everything[-1].id
    # three inserts, three positions; ids are position << 14 | index
    assert len({n.id >> NOTIFICATION_ID_SHIFT for n in everything}) == 3


def test_str_ids_and_bytes_round_trip_in_notifications(recorder: GaterApplicationRecorder) -> None:
    sid = str(uuid4())  # a str that looks like a UUID stays a str
    state = bytes(range(256))
    recorder.insert_events([ev(sid, 1, state=state), ev("order-7", 0, state=b"")])
    notes = recorder.select_notifications(None, 10)
    assert [(n.originator_id, type(n.originator_id)) for n in notes] == [(sid, str), ("order-7", str)]
    assert [n.state for n in notes] == [state, b""]
    assert recorder.select_events(sid)[0].state == state


async def _raw(gateway: Gateway, store: str, op: str, body: dict[str, Any]) -> Any:
    nc = await connection.connect(gateway.url)
    try:
        return await GaterClient(nc, prefix=gateway.prefix).request(store, "stream", op, body)
    finally:
        await nc.close()


def test_events_of_other_clients_show_in_the_log(
    es_gateway: Gateway, store: str, recorder: GaterApplicationRecorder
) -> None:
    asyncio.run(
        _raw(es_gateway, store, "append", {"stream_id": "node-1", "events": [{"event_type": "Seen", "data": {"a": 1}}]})
    )
    (n,) = recorder.select_notifications(None, 10)
    assert (n.originator_id, n.originator_version, n.topic, n.state) == ("node-1", 0, "Seen", b'{"a":1}')


def test_a_subscription_sees_other_writers_by_polling(
    es_gateway: Gateway, store: str, recorder: GaterApplicationRecorder
) -> None:
    recorder.insert_events([ev(uuid4(), 1)])
    first = recorder.max_notification_id()
    with recorder.subscribe(gt=first) as subscription:
        started = time.monotonic()
        body = {"stream_id": "x-1", "events": [{"event_type": "Other", "data": None}]}
        asyncio.run(_raw(es_gateway, store, "append", body))  # not through this process's recorders
        n = next(subscription)
        assert n.topic == "Other" and n.originator_id == "x-1"
        assert time.monotonic() - started < 5


def test_a_resend_after_a_lost_reply_is_not_a_conflict(recorder: GaterApplicationRecorder) -> None:
    """The reply of the first try is lost and the same body is sent again: the insert succeeds
    with the ids of the stored events (the gateway answers the resend with the first result; were
    it to answer ``wrong_expected_version``, the recorder finds its own events by id)."""
    request = recorder._request
    calls: list[str] = []

    async def lossy(op: str, body: dict[str, Any]) -> Any:
        calls.append(op)
        if op == "append_multi" and calls.count("append_multi") == 1:
            await request(op, body)  # stored; the reply never arrives
        return await request(op, body)

    recorder._request = lossy  # type: ignore[method-assign]
    a = uuid4()
    ids = recorder.insert_events([ev(a, 1), ev(a, 2)])
    notes = recorder.select_notifications(None, 10)
    assert ids == [n.id for n in notes] and len(notes) == 2


def test_the_recorder_finds_its_own_events_when_a_resend_conflicts(recorder: GaterApplicationRecorder) -> None:
    """As above, with a gateway that answers the resend with ``wrong_expected_version``."""
    from esdb_gater.shared.core.errors import WrongExpectedVersionError

    request = recorder._request

    async def conflicting(op: str, body: dict[str, Any]) -> Any:
        if op != "append_multi":
            return await request(op, body)
        await request(op, body)  # stored, reply lost
        a0 = body["appends"][0]
        conflicts = [{"stream_id": a0["stream_id"], "expected_version": a0["expected_version"], "actual_version": 1}]
        raise WrongExpectedVersionError("resend", details={"conflicts": conflicts})

    recorder._request = conflicting  # type: ignore[method-assign]
    a = uuid4()
    ids = recorder.insert_events([ev(a, 1), ev(a, 2)])
    recorder._request = request  # type: ignore[method-assign]
    notes = recorder.select_notifications(None, 10)
    assert ids == [n.id for n in notes] and len(notes) == 2
    with pytest.raises(IntegrityError):
        recorder.insert_events([ev(a, 2)])


def test_tracking_and_events_are_one_transaction(factory: GaterFactory) -> None:
    process = factory.process_recorder()
    a = uuid4()
    process.insert_events([ev(a, 1)], tracking=Tracking("Upstream", 40))
    with pytest.raises(IntegrityError):
        process.insert_events([ev(a, 2)], tracking=Tracking("Upstream", 40))
    assert [e.originator_version for e in process.select_events(a)] == [1]
    with pytest.raises(IntegrityError):
        process.insert_events([ev(a, 1)], tracking=Tracking("Upstream", 41))
    assert process.max_tracking_id("Upstream") == 40
    process.insert_events([ev(a, 2)], tracking=Tracking("Upstream", 41))
    assert process.max_tracking_id("Upstream") == 41
    assert process.max_tracking_id("Other") is None


def test_recorders_are_thread_safe_and_refuse_use_after_close(es_gateway: Gateway, store: str) -> None:
    f = GaterFactory(Environment("es", es_gateway.env(store)))
    r = f.application_recorder()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                r.insert_events([ev(uuid4(), 1)])
                r.select_notifications(None, 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(r.select_notifications(None, 1000)) == 160
    f.close()
    f.close()  # idempotent
    from eventsourcing.persistence import InterfaceError

    with pytest.raises(InterfaceError):
        r.max_notification_id()


def test_configuration_from_the_environment() -> None:
    cfg = GaterConfig.from_env(Environment("Bank Accounts/EU", {}))
    assert cfg.store == "Bank_Accounts_EU" and cfg.subject_prefix == "esdb"
    assert cfg.nats_url == "nats://127.0.0.1:4222"
    env = Environment(
        "Bank",
        {
            "ESDB_GATER_STORE": "shared",
            "BANK_ESDB_GATER_STORE": "bank-only",
            "ESDB_GATER_NATS_URL": "nats://a:1,nats://b:2",
            "ESDB_GATER_NATS_USER": "u",
            "ESDB_GATER_NATS_PASSWORD": "p",
            "ESDB_GATER_INBOX_PREFIX": "_INBOX.u",
            "ESDB_GATER_POLL_INTERVAL": "0.5",
        },
    )
    cfg = GaterConfig.from_env(env)
    assert (cfg.store, cfg.nats_url, cfg.poll_interval) == ("bank-only", "nats://a:1,nats://b:2", 0.5)
    assert cfg.connect_options() == {
        "name": "eventsourcing_gater bank-only",
        "user": "u",
        "password": "p",
        "inbox_prefix": "_INBOX.u",
    }
    assert sanitise_store("x" * 80) == "x" * 64
    assert purpose_store("y" * 64, "snapshots") == "y" * 54 + "-snapshots"
    for bad in ({"ESDB_GATER_STORE": "a.b"}, {"ESDB_GATER_SUBJECT_PREFIX": "a b"}, {"ESDB_GATER_POLL_INTERVAL": "x"}):
        with pytest.raises(InfrastructureFactoryError):
            GaterConfig.from_env(Environment("App", bad))


def test_the_shim_holds_exactly_one_factory() -> None:
    factories = {
        v for v in vars(eventsourcing_gater).values() if isinstance(v, type) and issubclass(v, InfrastructureFactory)
    }
    assert factories == {GaterFactory}
    f = InfrastructureFactory.construct(Environment("App", {"PERSISTENCE_MODULE": "eventsourcing_gater"}))
    assert type(f) is GaterFactory
    f.close()


def test_no_server_is_an_operational_error() -> None:
    env = {"ESDB_GATER_NATS_URL": "nats://127.0.0.1:1", "ESDB_GATER_CONNECT_TIMEOUT": "0.5"}
    f = GaterFactory(Environment("App", env))
    try:
        with pytest.raises(OperationalError, match="no NATS server at "):
            f.application_recorder()
    finally:
        f.close()
