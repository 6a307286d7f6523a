"""``PERSISTENCE_MODULE=eventsourcing_gater``: the gateway as the ``eventsourcing`` library's event store.

A top-level name on purpose (the library's convention: ``eventsourcing_kurrentdb``,
``eventsourcing_axonserver`` …); the code is ``esdb_gater.eventsourcing``. The library picks the
one ``InfrastructureFactory`` subclass of this module, so nothing else of that kind is imported
here. See docs/eventsourcing.md.
"""

from esdb_gater.eventsourcing import GaterFactory

Factory = GaterFactory

__all__ = ["Factory", "GaterFactory"]
