"""The channel table and the checks that depend on it: HMAC and capability tokens.

The table is SPEC.md §9's, with every field overridable per channel in the settings
(``[channels.overrides.<name>]`` or ``ESDB_GATER_CHANNELS__OVERRIDES__<NAME>__<FIELD>``); a name
not in the table adds a channel (normal priority, no rate limit, optional HMAC unless set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from esdb_gater.shared.core.errors import NotFoundError
from esdb_gater.shared.core.settings import ChannelsSettings
from esdb_gater.shared.models.channel import ChannelInfo
from esdb_gater.shared.security import authz, capability
from esdb_gater.shared.security import signing as security

__all__ = ["DEFAULT_TABLE", "Authorizer", "ChannelConfig", "ChannelTable", "HmacPolicy"]

Priority = Literal["critical", "high", "normal", "low"]
PRIORITIES: Final[tuple[Priority, ...]] = ("critical", "high", "normal", "low")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    priority: Priority
    rate_limit: int | None  # messages per second per topic; None = unlimited
    hmac: Literal["required", "optional"]
    capability_mode: capability.CapabilityMode
    durable: bool

    def info(self) -> ChannelInfo:
        return ChannelInfo(
            name=self.name,
            priority=self.priority,
            rate_limit=self.rate_limit,
            hmac=self.hmac,
            capability_mode=self.capability_mode,
            durable=self.durable,
        )


# SPEC.md §9 (the seed's table; the original's code disagreed with it for seven channels, see
# docs/adr/0007-channels.md): priority, rate limit per topic per second, HMAC.
DEFAULT_TABLE: Final[dict[str, tuple[Priority, int | None, Literal["required", "optional"]]]] = {
    "alerts": ("critical", None, "required"),
    "security": ("critical", None, "required"),
    "events": ("high", None, "optional"),
    "health": ("high", 100, "optional"),
    "system": ("normal", None, "optional"),
    "metrics": ("normal", 10_000, "optional"),
    "audit": ("normal", None, "optional"),
    "lifecycle": ("normal", None, "optional"),
    "logging": ("low", 1_000, "optional"),
    "diagnostics": ("low", 100, "optional"),
}


class ChannelTable:
    def __init__(self, settings: ChannelsSettings, floor: capability.CapabilityMode = "disabled") -> None:
        """``floor``: the global ``security.capability_mode``; a channel without its own
        ``capability_mode`` override gets the stricter of it and ``channels.capability_mode``."""
        names = list(DEFAULT_TABLE) + [n for n in settings.overrides if n not in DEFAULT_TABLE]
        self.channels: dict[str, ChannelConfig] = {}
        for name in names:
            priority, rate, hmac = DEFAULT_TABLE.get(name, ("normal", None, "optional"))
            o = settings.overrides.get(name)
            if o is not None:
                priority = o.priority or priority
                if o.rate_limit is not None:
                    rate = o.rate_limit or None
                hmac = o.hmac or hmac
            durable = o.durable if o is not None and o.durable is not None else priority == "critical"
            if o is not None and o.capability_mode:
                mode: capability.CapabilityMode = o.capability_mode  # a per-channel override wins
            else:
                mode = authz.stricter(settings.capability_mode, floor)
            self.channels[name] = ChannelConfig(name, priority, rate, hmac, mode, durable)

    def get(self, name: str) -> ChannelConfig:
        ch = self.channels.get(name)
        if ch is None:
            raise NotFoundError(
                f"no channel named {name!r}", details={"channel": name, "channels": sorted(self.channels)}
            )
        return ch

    @property
    def any_durable(self) -> bool:
        return any(c.durable for c in self.channels.values())

    @property
    def any_rate_limited(self) -> bool:
        return any(c.rate_limit for c in self.channels.values())


@dataclass(frozen=True, slots=True)
class HmacPolicy:
    """The service's HMAC settings; ``check`` returns True when the message was signed (so the
    replay check must follow), False when it is an unsigned message on an optional channel."""

    secret: bytes
    ttl_s: int
    max_skew_s: int

    def check(self, ch: ChannelConfig, message: Any) -> bool:
        signed = isinstance(message, dict) and security.SIGNATURE in message
        if ch.hmac == "required" or signed:
            security.verify(message, self.secret, ttl_s=self.ttl_s, max_skew_s=self.max_skew_s)
            return True
        return False


@dataclass(frozen=True, slots=True)
class Authorizer:
    """The channel ops' capability checks (their rules in shared/authz.TABLE are
    ``checked_by="channel"``): the channel's own mode, the token from the body's
    ``capability_token`` or else the request's ``Authorization: Bearer`` header."""

    realm: str
    trusted_issuers: tuple[str, ...]
    audience: str | None
    leeway_s: int
    verifier: authz.Verifier | None = field(default=None, compare=False)

    def _verify(self, token: str) -> capability.Capability:
        if self.verifier is not None:
            return self.verifier.verify(token)
        return capability.verify(
            token, trusted_issuers=self.trusted_issuers, audience=self.audience, now=time.time(), leeway_s=self.leeway_s
        )

    def check(self, ch: ChannelConfig, topic: str, action: str, token: str | None) -> capability.Capability | None:
        if ch.capability_mode == "disabled":
            return None
        token = token or authz.request_token()
        resource = capability.channel_resource(self.realm, ch.name, topic)
        if not token:
            if ch.capability_mode == "required":
                raise capability.CapabilityError(
                    "capability_required", f"a capability token is required for {resource}"
                )
            return None
        cap = self._verify(token)
        authz.authorize(cap, resource, action)
        return cap

    def holder(self, cap: capability.Capability) -> str:
        """The DID a forwarding records as its creator (shared/authz.holder_did)."""
        return authz.holder_did(cap, self.audience)

    def check_unsubscribe(self, ch: ChannelConfig | None, creator: str | None, token: str | None) -> None:
        """Only the forwarding's creator (the holder DID of the token that subscribed) or a
        holder of ``store/admin`` on ``esdb://<realm>/store/_`` may remove a forwarding made with
        a token. One made without a token (or on a channel whose mode is now ``disabled``) may
        be removed by anyone, as before."""
        if creator is None or (ch is not None and ch.capability_mode == "disabled"):
            return
        token = token or authz.request_token()
        if not token:
            raise capability.CapabilityError(
                "capability_required", "removing this forwarding needs the token of its creator (or store/admin)"
            )
        cap = self._verify(token)
        if self.holder(cap) == creator:
            return
        rule = authz.TABLE["channel.unsubscribe"]
        authz.authorize(cap, rule.resource(self.realm, "_", {}), rule.action)
