"""Link service: derived streams ``$link:<name>`` fed from a source (one stream, a stream-id
pattern, or all streams) through a declarative filter and transform (SPEC.md §8,
docs/api/link.md, docs/adr/0010-links.md).

Subjects: ``<prefix>.api.<store>.link.{create,start,stop,delete,get,list,info}``.
JetStream code: store.py (definitions, progress, consumers); driver.py (forwarding, leases).
"""
