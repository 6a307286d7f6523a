"""Snapshot service: record, read, list and delete aggregate snapshots (SPEC.md §5).

Subjects: ``<prefix>.api.<store>.snapshot.{record,read,read_chunk,delete,list}``.
Owns the KV bucket ``<prefix>-snap-<store>`` and the Object Store bucket ``<prefix>-snapobj-<store>``
(see store.py and docs/adr/0005-snapshots.md).
"""
