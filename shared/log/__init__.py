"""Layer 2, the event log on JetStream: every storage contract shared between services.

* ``jetstream``: the JetStream calls (``Log``), the API error-code table (``ERR_*``), JetStream
  header names, and small helpers (create a stream or consumer, consumer info, a consistent get);
* ``eventlog``: the commit format of the log (one message per append);
* ``stores``: the log stream's config, listing the stores, a store's config for other services
  (and its cache), the stores known to exist, per-store KV buckets;
* ``index``: the index stream's config and its records (event-id entries, the checkpoint);
* ``kv``: KV listing without consumers (``multi_last``), the snapshot bucket's keys;
* ``lease``, ``quotas``: leases on KV keys, quotas and idle-evicted per-store state;
* ``port`` (and its in-memory fake): the log operations the stores use, as a protocol.

Imports ``core`` and ``models`` only.
"""
