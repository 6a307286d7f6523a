"""Schema service: register event schemas with declarative upcasters, and upcast events (SPEC.md §6).

Subjects: ``<prefix>.api.<store>.schema.{register,get,list,unregister,upcast}``.
Owns the KV bucket ``<prefix>-schema-<store>`` (see store.py and
docs/adr/0006-schema-registry-and-upcasting.md); every service that reads events watches it
through ``esdb_gater.shared.upcasting.registry.SchemaRegistry``.
"""
