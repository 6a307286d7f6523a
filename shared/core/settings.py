"""Typed settings, read once at start-up (SPEC.md §10 "Configuration").

Sources, highest first: keyword arguments, ``ESDB_GATER_*`` environment variables (nested with
``__``, e.g. ``ESDB_GATER_DEFAULT_STORE__REPLICAS=3``), then the TOML file named by
``ESDB_GATER_CONFIG`` (if any). Secrets are read only from the environment or a file and are
never logged (``SecretStr``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from esdb_gater.shared.core.subjects import PREFIX_RE, STORE_RE

__all__ = [
    "ChannelOverride",
    "ChannelsSettings",
    "MemorySettings",
    "QuotaSettings",
    "RetrySettings",
    "SecuritySettings",
    "Settings",
    "StoreConfig",
]


class StoreConfig(BaseModel):
    """How the JetStream streams of one store are created."""

    replicas: int = Field(default=1, ge=1, le=5)
    storage: Literal["file", "memory"] = "file"
    max_age_s: float = Field(default=0, ge=0, description="0 = keep events forever")
    max_bytes: int = Field(default=-1, ge=-1)
    duplicate_window_s: float = Field(default=120, gt=0, le=86400)
    description: str = ""


Priority = Literal["critical", "high", "normal", "low"]
CapabilityModeSetting = Literal["disabled", "optional", "required"]


class MemorySettings(BaseModel):
    """Memory pressure levels (shared/runtime/memory.py)."""

    elevated: float = Field(default=0.70, gt=0, le=1, description="used/total at which the level is elevated")
    critical: float = Field(default=0.85, gt=0, le=1, description="used/total at which the level is critical")
    limit_bytes: int | None = Field(
        default=None, gt=0, description="force the total (used = this process's RSS); else cgroup, else the host"
    )
    sample_interval_s: float = Field(default=1.0, ge=0, description="how long one reading is reused")

    @model_validator(mode="after")
    def _order(self) -> MemorySettings:
        if self.elevated > self.critical:
            raise ValueError("memory.elevated must not exceed memory.critical")
        return self


class ChannelOverride(BaseModel):
    """One channel's settings; unset fields keep the SPEC.md §9 default (or, for a channel not in
    the table, normal priority, no rate limit, optional HMAC)."""

    priority: Priority | None = None
    rate_limit: int | None = Field(default=None, ge=0, description="messages per second per topic; 0 = unlimited")
    hmac: Literal["required", "optional"] | None = None
    capability_mode: CapabilityModeSetting | None = None
    durable: bool | None = Field(default=None, description="JetStream-backed history (default: critical channels)")


def _default_shed_at() -> dict[Priority, float]:
    return {"low": 0.25, "normal": 0.5, "high": 1.0}


def _default_weights() -> dict[Priority, int]:
    return {"critical": 8, "high": 4, "normal": 2, "low": 1}


class ChannelsSettings(BaseModel):
    """The channel service (docs/api/channel.md, docs/adr/0007-channels.md)."""

    overrides: dict[str, ChannelOverride] = Field(default_factory=dict, description="per channel, by name")
    hmac_secret: SecretStr | None = Field(default=None, description="from the environment only; never logged")
    hmac_secret_file: str | None = Field(default=None, description="a file holding the HMAC secret")
    message_ttl_s: int = Field(default=300, ge=1, le=86400, description="max age of a signed message")
    max_clock_skew_s: int = Field(default=5, ge=0, le=300, description="how far in the future signed_at may be")
    capability_mode: CapabilityModeSetting = "optional"
    trusted_issuers: list[str] = Field(default_factory=list, description="DIDs that may issue root capability tokens")
    audience: str | None = Field(default=None, description="when set, a token's aud must be this DID")
    realm: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    capability_leeway_s: int = Field(default=5, ge=0, le=300)
    rate_limit_scope: Literal["cluster", "instance"] = "cluster"
    workers: int = Field(default=32, ge=1, le=1024, description="deliveries in progress at once per instance")
    max_queue: int = Field(
        default=4096, ge=1, description="queued publishes per instance past which non-critical are shed (memory cap)"
    )
    shed_at: dict[Priority, float] = Field(
        default_factory=_default_shed_at,
        description="fraction of max_queue_wait_s the queue may lag before a priority is shed (critical never is)",
    )
    weights: dict[Priority, int] = Field(
        default_factory=_default_weights,
        description="weighted draining of the priority queues",
    )
    max_queue_wait_s: float = Field(default=5.0, gt=0, description="a queued publish older than this is dropped")
    max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    history_max_age_s: float = Field(default=86400, gt=0, description="how long durable channels keep messages")
    history_max_bytes: int = Field(default=256 * 1024 * 1024, ge=-1)
    state_replicas: int = Field(default=1, ge=1, le=5, description="replicas of the channel service's streams")
    subscribe_max_ttl_s: int = Field(default=3600, ge=1, description="longest life of a subscribe-with-token")
    max_token_subscriptions: int = Field(default=10000, ge=1)
    deliver_prefixes: list[str] = Field(
        default_factory=lambda: ["_INBOX."], description="subjects a subscribe-with-token may deliver to"
    )

    @field_validator("overrides")
    @classmethod
    def _names(cls, v: dict[str, ChannelOverride]) -> dict[str, ChannelOverride]:
        for name in v:
            if not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
                raise ValueError(f"channel name {name!r} must match [a-z0-9_-]{{1,32}}")
        return v


class QuotaSettings(BaseModel):
    """Per-store limits on what clients can make the gateway keep (issue 10, docs/security.md).
    Going over answers ``quota_exceeded`` (429). 0 means no limit."""

    subscriptions_per_store: int = Field(default=1000, ge=0)
    links_per_store: int = Field(default=100, ge=0)
    schemas_per_store: int = Field(default=1000, ge=0)
    forwardings_per_store: int = Field(default=1000, ge=0, description="channel subscribe-with-token forwardings")
    auto_created_stores: int = Field(default=100, ge=0, description="stores that auto_create_stores may make")
    idle_evict_s: float = Field(default=300, gt=0, description="per-store state in memory (watches, caches) kept idle")


class RetrySettings(BaseModel):
    """The client's default retry policy (esdb_gater/client/retry.py; the seed's ``retry`` keys): a
    retriable error is tried again after ``min(base_delay_ms·2^n + jitter, max_delay_ms)``."""

    max_attempts: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="retries after the first call (10: at most 11 calls); 0 = no retry",
    )
    base_delay_ms: int = Field(default=100, ge=1, description="delay before the first retry (plus jitter)")
    max_delay_ms: int = Field(default=30_000, ge=1, description="cap on one delay")


class SecuritySettings(BaseModel):
    """The trust boundary (docs/security.md, issue 10): where replies may go, which client-named
    subjects are refused, and capability tokens on every service."""

    capability_mode: CapabilityModeSetting = Field(
        default="disabled",
        description="disabled: tokens ignored; optional: a token that comes must hold; required: every op needs one",
    )
    trusted_issuers: list[str] = Field(default_factory=list, description="DIDs that may issue root capability tokens")
    realm: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    audience: str | None = Field(default=None, description="when set, a token's aud must be this DID")
    capability_leeway_s: int = Field(default=5, ge=0, le=300)
    open_services: list[str] = Field(
        default_factory=lambda: ["health", "memory"],
        description="service tokens whose ops need no capability token even in required mode",
    )
    service_token: SecretStr | None = Field(
        default=None, description="the services' own capability token for calls between services (environment only)"
    )
    service_key_file: str | None = Field(
        default=None, description="a file holding the services' Ed25519 private key (32 raw bytes, hex or base64)"
    )
    reply_prefixes: list[str] = Field(
        default_factory=lambda: ["_INBOX.", "_R_."],
        description="reply subjects a service answers; anything else is dropped, logged and counted",
    )
    target_allow: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per store: subject prefixes a client-named target (subscriber, deliver_to) must start with",
    )

    @field_validator("reply_prefixes")
    @classmethod
    def _reply_prefixes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or any(c in p for c in " \t\r\n*>"):
                raise ValueError(f"reply prefix {p!r} must be a non-empty literal subject start")
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESDB_GATER_", env_nested_delimiter="__", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="NATS user to connect as (secure mode: the service's user, docs/adr/0014); the "
        "connection's inbox prefix is then _INBOX.<user>",
    )
    nats_password: SecretStr | None = Field(default=None, description="the NATS user's password (environment only)")
    subject_prefix: str = "esdb"
    auto_create_stores: bool = Field(default=False, description="create a store on first use (gater up turns this on)")
    stores: dict[str, StoreConfig] = Field(default_factory=dict, description="created at start-up")
    default_store: StoreConfig = Field(default_factory=StoreConfig)
    max_events_per_append: int = Field(default=1000, ge=1, le=10000)
    max_in_flight: int = Field(default=512, ge=1, description="concurrent requests per service instance")
    request_timeout_s: float = Field(default=5.0, gt=0)
    lease_ttl_s: float = Field(
        default=5.0, ge=0.5, le=300, description="how long a dead instance's deliveries wait to be taken over"
    )
    service_name_prefix: str = "esdb"
    health_services: list[str] | None = Field(
        default=None, description="services health.check expects to answer (default: every service in services/)"
    )
    channels: ChannelsSettings = Field(default_factory=ChannelsSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    telemetry_handlers: Annotated[list[Literal["default", "logger"]], NoDecode] = Field(
        default_factory=list,
        description='in-process telemetry handlers attached at start-up: "default" (or the seed\'s "logger") '
        "logs each catalogue event as one line on the logger esdb.telemetry (docs/telemetry.md)",
    )

    @field_validator("telemetry_handlers", mode="before")
    @classmethod
    def _handlers(cls, v: object) -> object:
        """``ESDB_GATER_TELEMETRY_HANDLERS=default`` (comma-separated) or a JSON list."""
        if isinstance(v, str):
            text = v.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return v

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not PREFIX_RE.match(v):
            raise ValueError("subject_prefix must match [A-Za-z0-9_-]{1,32}")
        return v

    @field_validator("stores")
    @classmethod
    def _stores(cls, v: dict[str, StoreConfig]) -> dict[str, StoreConfig]:
        for name in v:
            if not STORE_RE.match(name):
                raise ValueError(f"store id {name!r} must match [A-Za-z0-9_-]{{1,64}}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        path = os.environ.get("ESDB_GATER_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
