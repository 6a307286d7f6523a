"""Typed settings, read once at start-up (SPEC.md §10 "Configuration").

Sources, highest first: keyword arguments, ``ESDB_GATER_*`` environment variables (nested with
``__``, e.g. ``ESDB_GATER_DEFAULT_STORE__REPLICAS=3``), then the TOML file named by
``ESDB_GATER_CONFIG`` (if any). Secrets are read only from the environment or a file and are
never logged (``SecretStr``).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.subjects import PREFIX_RE, STORE_RE

__all__ = ["Settings", "StoreConfig"]


class StoreConfig(BaseModel):
    """How the JetStream streams of one store are created."""

    replicas: int = Field(default=1, ge=1, le=5)
    storage: Literal["file", "memory"] = "file"
    max_age_s: float = Field(default=0, ge=0, description="0 = keep events forever")
    max_bytes: int = Field(default=-1, ge=-1)
    duplicate_window_s: float = Field(default=120, gt=0, le=86400)
    description: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESDB_GATER_", env_nested_delimiter="__", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
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
