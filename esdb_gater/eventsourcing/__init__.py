"""The ``eventsourcing`` library's persistence module for the gateway (docs/eventsourcing.md).

``PERSISTENCE_MODULE=eventsourcing_gater`` (the top-level shim) or ``esdb_gater.eventsourcing``:
the library finds ``GaterFactory``, the one infrastructure factory class of either module.
Needs the extra: ``pip install 'esdb-gater[eventsourcing]'``.

* ``config.py``: the settings, read from the application's environment;
* ``bridge.py``: the private event-loop thread and NATS connection of a factory;
* ``recorders.py``: aggregate, application, tracking and process recorders, the subscription;
* ``factory.py``: ``GaterFactory``.

Talks to the gateway over its public NATS API only (``stream.append_multi``, ``stream.read_all``,
``stream.checkpoint``, ``stream.forward``/``backward``, ``store.create``), through ``GaterClient``.
"""

from esdb_gater.eventsourcing.factory import GaterFactory
from esdb_gater.eventsourcing.recorders import (
    GaterAggregateRecorder,
    GaterApplicationRecorder,
    GaterProcessRecorder,
    GaterSubscription,
    GaterTrackingRecorder,
)

Factory = GaterFactory

__all__ = [
    "Factory",
    "GaterAggregateRecorder",
    "GaterApplicationRecorder",
    "GaterFactory",
    "GaterProcessRecorder",
    "GaterSubscription",
    "GaterTrackingRecorder",
]
