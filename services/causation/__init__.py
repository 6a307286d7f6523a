"""Causation service: effects, cause, chain, correlated events and causation graphs (SPEC.md §7,
docs/api/causation.md, docs/adr/0012-causation-index.md), answered from indexes kept as events
are written, never by reading streams.

Subjects: ``<prefix>.api.<store>.causation.{effects,cause,chain,correlated,graph}``.
JetStream code: store.py (the indexes); indexer.py keeps them.
"""
