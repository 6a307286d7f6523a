"""``GaterClient``: the seed's API (``esdb_gater_api``) over NATS request/reply.

    client = await GaterClient.connect("nats://127.0.0.1:4222")
    await client.append_events("orders", "order-1", -1, [{"event_type": "Placed", "data": {...}}])
    events = await client.stream_forward("orders", "order-1", 0, 100)

Error replies raise the classes of ``esdb_gater.shared.core.errors`` (``WrongExpectedVersionError`` …), the
same ones the services raise. JSON by default; ``codec="msgpack"`` sends and receives msgpack.
Binary event data comes back as ``bytes`` with either codec.

One module per service, each a mixin of that service's methods over ``Transport``
(``transport.py``: connection, codec, request with retry, bearer header, error replies), and
``GaterClient`` all of them together. Mixins, not sub-client attributes (``client.stream.…``):
the seed's flat names (``append_events``, ``save_subscription``, ``publish`` …) stay the one API,
with no delegating method to keep in step, and a service's whole client is one file.
"""

from __future__ import annotations

from esdb_gater.shared.client.causation import CausationMethods
from esdb_gater.shared.client.channel import ChannelMethods
from esdb_gater.shared.client.health import HealthMethods
from esdb_gater.shared.client.link import LinkMethods
from esdb_gater.shared.client.scavenger import ScavengerMethods
from esdb_gater.shared.client.schema import SchemaMethods
from esdb_gater.shared.client.snapshot import SnapshotMethods
from esdb_gater.shared.client.stream import StreamMethods
from esdb_gater.shared.client.subscription import SubscriptionMethods

__all__ = ["GaterClient"]


class GaterClient(
    StreamMethods,
    SnapshotMethods,
    SchemaMethods,
    SubscriptionMethods,
    ChannelMethods,
    LinkMethods,
    ScavengerMethods,
    CausationMethods,
    HealthMethods,
):
    """Every service's ops on one connection; ``GaterClient(nc, prefix=, codec=, timeout=, retry=,
    token=)`` or ``await GaterClient.connect(url, ...)`` (see ``Transport``)."""
