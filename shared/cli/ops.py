"""The operator commands of ``gater`` (``req``, ``sub``, ``streams``, ``read``, ``subscriptions``,
``links``, ``scavenge``, ``health``): thin wrappers over the public NATS API, so they work
against any deployment. ``register(app)`` adds them to the ``gater`` application."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(app: Any) -> None:
    """Add the operator commands to the ``gater`` typer application (filled in by issue 14)."""
