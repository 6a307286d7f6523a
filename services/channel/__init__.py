"""Channel service: the ten pub/sub channels with priorities, rate limits, HMAC and capability
tokens (SPEC.md §9, docs/api/channel.md, docs/adr/0007-channels.md).

Subjects: ``<prefix>.api._.channel.{publish,subscribe,unsubscribe,history,list}``; messages go
out on ``<prefix>.ch.<channel>.<topic tokens>``. JetStream code: store.py; the priority queues:
dispatch.py; the channel table, HMAC and capability checks: policy.py.
"""
