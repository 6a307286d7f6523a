"""Scavenger service: remove old events of a stream (per commit, never its last one), optionally
archiving them to the Object Store first; retention policies on a schedule (SPEC.md §7,
docs/api/scavenger.md, docs/adr/0011-scavenging.md).

Subjects: ``<prefix>.api.<store>.scavenger.{scavenge,scavenge_matching,dry_run,archive_read,
policy_set,policy_get,policy_list,policy_delete}``.
JetStream code: store.py. The order of the steps: engine.py. Policies: scheduler.py.
"""
