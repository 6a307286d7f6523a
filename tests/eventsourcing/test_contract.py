"""The eventsourcing library's own recorder contract (``eventsourcing.tests.persistence``, 9.5)
run against the gateway through ``eventsourcing_gater``: every case, each test on a fresh store.

Adjusted, and why (docs/eventsourcing.md, "The library's contract"):

* ``ApplicationRecorderTestCase.test_insert_select`` expects the notification ids 1, 2, 3 of a
  fresh store. The gateway's ids are ``position * 16384 + index``: unique per event, increasing,
  consecutive within one insert, but not contiguous across inserts. ``test_insert_select`` here
  is a faithful copy with the ids the inserts returned in place of 1, 2, 3 (every assertion kept),
  plus checks of bounds that fall in the gaps between ids.
* ``EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False``: the library's own switch for stores without
  contiguous ids; it only guards the id assertions of ``optional_test_insert_subscribe``, which
  runs here (``test_insert_subscribe``) with everything else in it checked.

Nothing is skipped. The performance and concurrency tests run as shipped. Also run: the
library's example application case (``eventsourcing.tests.application``: bank accounts with
snapshots), whose ``notification_log["1,10"]`` works with gaps between ids as the library's
``LocalNotificationLog`` documents.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests import application as example
from eventsourcing.tests import persistence as contract
from eventsourcing.utils import Environment

from esdb_gater.eventsourcing import (
    GaterAggregateRecorder,
    GaterApplicationRecorder,
    GaterFactory,
    GaterProcessRecorder,
    GaterTrackingRecorder,
)
from tests.eventsourcing.conftest import Gateway


class OnFreshStore:
    """A factory on a store of its own for each test (closed after it)."""

    gateway: ClassVar[Gateway]  # set by tests/eventsourcing/conftest.py
    factory: GaterFactory

    def setUp(self) -> None:
        self.factory = GaterFactory(Environment("es", self.gateway.env()))
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        try:
            super().tearDown()  # type: ignore[misc]
        finally:
            self.factory.close()


class TestAggregateRecorder(OnFreshStore, contract.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.factory.aggregate_recorder()


class TestAggregateRecorderWithStrIds(TestAggregateRecorder):
    """The same with ``str`` originator ids (they must come back as ``str``)."""

    def new_originator_id(self) -> UUID | str:
        return f"account-{uuid4().hex}"


class TestSnapshotRecorder(TestAggregateRecorder):
    """The recorder of purpose "snapshots" (its own store) keeps the same contract."""

    def create_recorder(self) -> AggregateRecorder:
        return self.factory.aggregate_recorder(purpose="snapshots")


class TestApplicationRecorder(OnFreshStore, contract.ApplicationRecorderTestCase[GaterApplicationRecorder]):
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False  # ids are position * 16384 + index (see the module docstring)

    def create_recorder(self) -> GaterApplicationRecorder:
        recorder = self.factory.application_recorder()
        assert isinstance(recorder, GaterApplicationRecorder)
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_insert_select(self) -> None:
        """The library's ``test_insert_select`` with the returned ids n1, n2, n3 in place of the
        hard-coded 1, 2, 3 (see the module docstring); every assertion is kept."""
        recorder = self.create_recorder()

        self.assertEqual(len(recorder.select_notifications(start=None, limit=3)), 0)
        self.assertEqual(len(recorder.select_notifications(start=None, limit=3, topics=["topic1"])), 0)
        self.assertIsNone(recorder.max_notification_id())

        originator_id1 = self.new_originator_id()
        originator_id2 = self.new_originator_id()
        stored_event1 = StoredEvent(
            originator_id=originator_id1, originator_version=self.INITIAL_VERSION, topic="topic1", state=b"state1"
        )
        stored_event2 = StoredEvent(
            originator_id=originator_id1, originator_version=self.INITIAL_VERSION + 1, topic="topic2", state=b"state2"
        )

        notification_ids = recorder.insert_events([stored_event1, stored_event2])
        # was: assertEqual(notification_ids, [1, 2])
        assert isinstance(notification_ids, list)
        n1, n2 = notification_ids
        self.assertGreater(n1, 0)
        self.assertEqual(n2, n1 + 1)  # the events of one insert have consecutive ids

        stored_event3 = StoredEvent(
            originator_id=originator_id2, originator_version=self.INITIAL_VERSION, topic="topic3", state=b"state3"
        )
        notification_ids = recorder.insert_events([stored_event3])
        # was: assertEqual(notification_ids, [3])
        assert isinstance(notification_ids, list)
        self.assertEqual(len(notification_ids), 1)
        (n3,) = notification_ids
        self.assertGreater(n3, n2)

        stored_events1 = recorder.select_events(originator_id1)
        stored_events2 = recorder.select_events(originator_id2)
        self.assertEqual(len(stored_events1), 2)
        self.assertEqual(len(stored_events2), 1)

        with self.assertRaises(IntegrityError):
            recorder.insert_events([stored_event3])

        expected = {
            n1: (originator_id1, "topic1", b"state1"),
            n2: (originator_id1, "topic2", b"state2"),
            n3: (originator_id2, "topic3", b"state3"),
        }

        def check(notifications: Any, ids: list[int]) -> None:
            self.assertEqual([n.id for n in notifications], ids)
            for n in notifications:
                originator_id, topic, state = expected[n.id]
                self.assertEqual(n.originator_id, originator_id)
                self.assertEqual(n.topic, topic)
                self.assertEqual(n.state, state)

        check(recorder.select_notifications(start=None, limit=10), [n1, n2, n3])
        check(recorder.select_notifications(start=n1, limit=10), [n1, n2, n3])
        check(recorder.select_notifications(start=None, stop=n2, limit=10), [n1, n2])
        check(recorder.select_notifications(start=n1, limit=10, inclusive_of_start=False), [n2, n3])
        check(recorder.select_notifications(start=n2, limit=10, inclusive_of_start=False), [n3])
        check(recorder.select_notifications(start=None, limit=10, topics=["topic1", "topic2", "topic3"]), [n1, n2, n3])
        check(recorder.select_notifications(n1, 10, topics=["topic1"]), [n1])
        check(recorder.select_notifications(n1, 3, topics=["topic2"]), [n2])
        check(recorder.select_notifications(n1, 3, topics=["topic3"]), [n3])
        check(recorder.select_notifications(n1, 3, topics=["topic1", "topic3"]), [n1, n3])

        self.assertEqual(recorder.max_notification_id(), n3)

        # Check limit is working
        check(recorder.select_notifications(None, 1), [n1])
        check(recorder.select_notifications(n2, 1), [n2])
        check(recorder.select_notifications(n1, 1, inclusive_of_start=False), [n2])
        check(recorder.select_notifications(n2, 2), [n2, n3])
        check(recorder.select_notifications(n3, 1), [n3])
        check(recorder.select_notifications(n3, 1, inclusive_of_start=False), [])
        check(recorder.select_notifications(start=n2, limit=10, stop=n2), [n2])
        check(recorder.select_notifications(start=n1, limit=10, stop=n2), [n1, n2])
        check(recorder.select_notifications(start=n1, limit=10, stop=n2, inclusive_of_start=False), [n2])

        # Added: bounds in the gaps between ids, and 0 (the subscription's "from the start")
        check(recorder.select_notifications(start=0, limit=10, inclusive_of_start=False), [n1, n2, n3])
        check(recorder.select_notifications(start=n2 + 1, limit=10), [n3])
        check(recorder.select_notifications(start=None, stop=n3 - 1, limit=10), [n1, n2])
        check(recorder.select_notifications(start=n1 - 1, stop=n1 - 1, limit=10), [])


class TestTrackingRecorder(OnFreshStore, contract.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.factory.tracking_recorder()


class TestProcessRecorder(OnFreshStore, contract.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()


class TestNonInterleavingNotificationIDs(OnFreshStore, contract.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory.application_recorder()


class MyTrackingRecorder(GaterTrackingRecorder):
    """A user's subclass: the factory must make exactly this class when asked to."""


class TestFactory(contract.InfrastructureFactoryTestCase[GaterFactory]):
    gateway: ClassVar[Gateway]

    def setUp(self) -> None:
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": "eventsourcing_gater", **self.gateway.env()})
        super().setUp()

    def expected_factory_class(self) -> type[GaterFactory]:
        return GaterFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return GaterAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return GaterApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return GaterTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return MyTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return GaterProcessRecorder


class TestFactoryByPackageName(TestFactory):
    """``PERSISTENCE_MODULE=esdb_gater.eventsourcing`` finds the same one factory."""

    def setUp(self) -> None:
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": "esdb_gater.eventsourcing", **self.gateway.env()})
        contract.InfrastructureFactoryTestCase.setUp(self)


class TestExampleApplication(example.ExampleApplicationTestCase):
    """The library's example application, configured through ``os.environ`` as it expects."""

    gateway: ClassVar[Gateway]
    expected_factory_topic = "esdb_gater.eventsourcing.factory:GaterFactory"

    def setUp(self) -> None:
        self._saved = {k: os.environ.get(k) for k in ("PERSISTENCE_MODULE", *self.gateway.env())}
        os.environ.update({"PERSISTENCE_MODULE": "eventsourcing_gater", **self.gateway.env()})
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
