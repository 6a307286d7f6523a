"""Health service: ``health.check`` (store-less, ``<prefix>.api._.health.check``) from real signals,
``health.quick`` per store, and the process's memory level and stats (SPEC.md §10,
docs/api/health.md).

Subjects: ``<prefix>.api._.health.check``, ``<prefix>.api.<store>.health.quick``,
``<prefix>.api.<store>.memory.{level,stats}``. JetStream and NATS probes: store.py.
"""
