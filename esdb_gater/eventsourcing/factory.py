"""``GaterFactory``: the infrastructure factory of ``PERSISTENCE_MODULE=eventsourcing_gater``."""

from __future__ import annotations

import threading
from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from esdb_gater.eventsourcing.bridge import Bridge
from esdb_gater.eventsourcing.config import GaterConfig, create_store_enabled, purpose_store
from esdb_gater.eventsourcing.recorders import (
    GaterAggregateRecorder,
    GaterApplicationRecorder,
    GaterProcessRecorder,
    GaterTrackingRecorder,
)

__all__ = ["GaterFactory"]


class GaterFactory(InfrastructureFactory[GaterTrackingRecorder]):
    """Recorders on the gateway's store ``ESDB_GATER_STORE`` (default: the application name).

    One factory holds one NATS connection and the daemon thread of its event loop, made on the
    first recorder; every recorder it makes shares them. ``close()`` (``Application.close()``)
    closes the connection and stops the thread."""

    SNAPSHOTS_STORE = "ESDB_GATER_SNAPSHOTS_STORE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.config = GaterConfig.from_env(self.env)
        self._bridge: Bridge | None = None
        self._lock = threading.Lock()

    @property
    def bridge(self) -> Bridge:
        with self._lock:
            if self._bridge is None or self._bridge.closed:
                self._bridge = Bridge(self.config, name=f"eventsourcing_gater-{self.config.store}")
            return self._bridge

    def _create(self) -> bool:
        return create_store_enabled(self.env)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """Purpose "events": the application's store; any other purpose ("snapshots"): the store
        ``<store>-<purpose>`` (``ESDB_GATER_SNAPSHOTS_STORE`` names the snapshots' store), so its
        records never appear in the application's notification log."""
        store = self.config.store
        if purpose != "events":
            store = (purpose == "snapshots" and self.env.get(self.SNAPSHOTS_STORE)) or purpose_store(store, purpose)
        return GaterAggregateRecorder(self.bridge, store, create_store=self._create())

    def application_recorder(self) -> ApplicationRecorder:
        cls: type[GaterApplicationRecorder] = GaterApplicationRecorder
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        if topic:
            cls = resolve_topic(topic)
        return cls(self.bridge, self.config.store, create_store=self._create())

    def tracking_recorder(
        self, tracking_recorder_class: type[GaterTrackingRecorder] | None = None
    ) -> GaterTrackingRecorder:
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else GaterTrackingRecorder
        assert cls is not None
        return cls(self.bridge, self.config.store, create_store=self._create())

    def process_recorder(self) -> ProcessRecorder:
        cls: type[GaterProcessRecorder] = GaterProcessRecorder
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        if topic:
            cls = resolve_topic(topic)
        return cls(self.bridge, self.config.store, create_store=self._create())

    def close(self) -> None:
        with self._lock:
            bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()
        super().__exit__(*exc)
