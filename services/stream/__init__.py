"""Stream service: appends and reads of event streams, and store administration.

Subjects: ``<prefix>.api.<store>.stream.{append,read,forward,backward,version,exists,list,delete,
read_until,read_range,version_at}`` and ``<prefix>.api.<store>.store.{create,info}``.
Owns the JetStream streams ``<prefix>-log-<store>`` (see store.py).
"""
