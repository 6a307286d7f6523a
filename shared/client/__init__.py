"""The Python client of the public NATS API (GaterClient) and retry with backoff.

``transport.py`` holds the request/reply every service shares; one module per service
(``stream``, ``snapshot``, ``schema``, ``subscription``, ``channel``, ``link``, ``scavenger``,
``causation``, ``health``) holds that service's methods; ``gater.py`` puts them together.
Layer: imports core, models and security (the bearer header, message signing) only; nothing in
the services imports it. ``from esdb_gater.shared.client import GaterClient`` is the public entry point.
"""

from esdb_gater.shared.client.channel import ChannelDelivery, ChannelSubscription
from esdb_gater.shared.client.gater import GaterClient
from esdb_gater.shared.client.health import Worker
from esdb_gater.shared.client.retry import RetryConfig
from esdb_gater.shared.client.subscription import Deliveries, Delivery

__all__ = ["ChannelDelivery", "ChannelSubscription", "Deliveries", "Delivery", "GaterClient", "RetryConfig", "Worker"]
