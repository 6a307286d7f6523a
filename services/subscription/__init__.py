"""Subscription service: persistent subscriptions with catch-up, live delivery, acks,
redelivery with backoff and parking (SPEC.md §4, docs/api/subscription.md).

Subjects: ``<prefix>.api.<store>.subscription.{save,remove,ack,list,get,replay_parked}``; the
delivering instance also listens on ``<prefix>.api.<store>.subscription.ctl.<key>.>``.
JetStream code: store.py (definitions, consumers, parked events) and driver.py (delivery).
"""
