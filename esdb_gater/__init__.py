"""esdb-gater: the event-store gateway on NATS, under one import namespace.

The distribution installs this package only. ``shared``, ``services`` and ``bench`` are the
repository's top-level folders, reached here through symbolic links (a wheel holds real copies):

    esdb_gater.cli        the ``gater`` command (top: may import everything below)
    esdb_gater.bench      ``gater bench`` / ``gater-bench``: the gateway against raw JetStream
    esdb_gater.eventsourcing  the ``eventsourcing`` library's persistence module (a client of the
                          public API; the extra ``[eventsourcing]``, shim ``eventsourcing_gater``)
    esdb_gater.services   the services; each imports only esdb_gater.shared
    esdb_gater.shared     the library under the services, in layers (see ARCHITECTURE.md)
"""
