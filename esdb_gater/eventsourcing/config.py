"""The module's settings, read from the application's ``Environment``.

``env.get(KEY)`` looks up ``<APPLICATION NAME>_KEY`` first, then ``KEY`` (the library's rule), so
one process can point two applications at different servers or stores.

| key | default | meaning |
|---|---|---|
| ``ESDB_GATER_NATS_URL`` | ``nats://127.0.0.1:4222`` | NATS server URL(s), comma-separated |
| ``ESDB_GATER_STORE`` | the application name, sanitised | the gateway store of the events |
| ``ESDB_GATER_SUBJECT_PREFIX`` | ``esdb`` | subject prefix of the deployment |
| ``ESDB_GATER_NATS_USER``, ``ESDB_GATER_NATS_PASSWORD`` | none | NATS user and password |
| ``ESDB_GATER_NATS_TOKEN`` | none | NATS authentication token |
| ``ESDB_GATER_NATS_CREDS`` | none | NATS credentials file (JWT + nkey) |
| ``ESDB_GATER_INBOX_PREFIX`` | ``_INBOX`` | reply-inbox prefix of the connection |
| ``ESDB_GATER_TOKEN`` | none | capability token, sent as ``Authorization: Bearer`` |
| ``ESDB_GATER_REQUEST_TIMEOUT`` | ``5`` | seconds to wait for one reply |
| ``ESDB_GATER_CONNECT_TIMEOUT`` | ``5`` | seconds to wait for the first connection |
| ``ESDB_GATER_POLL_INTERVAL`` | ``0.1`` | seconds between a subscription's polls for new events |
| ``CREATE_TABLE`` | ``yes`` | ``store.create`` the store when a recorder is made |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from eventsourcing.persistence import InfrastructureFactoryError
from eventsourcing.utils import Environment, strtobool

__all__ = ["DEFAULT_NATS_URL", "GaterConfig", "purpose_store", "sanitise_store"]

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
STORE_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_STORE_CHAR: Final = re.compile(r"[^A-Za-z0-9_-]")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")


def sanitise_store(name: str) -> str:
    """An application name as a store id: every other character becomes ``_``, at most 64."""
    return _NOT_STORE_CHAR.sub("_", name)[:64] or "eventsourcing"


def purpose_store(store: str, purpose: str) -> str:
    """The store of a recorder ``purpose`` other than "events" (``<store>-snapshots``)."""
    suffix = "-" + sanitise_store(purpose)[:32]
    return store[: 64 - len(suffix)] + suffix


def _float(env: Environment, key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InfrastructureFactoryError(f"{key} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise InfrastructureFactoryError(f"{key} must be > 0, not {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class GaterConfig:
    nats_url: str = DEFAULT_NATS_URL
    store: str = "eventsourcing"
    subject_prefix: str = "esdb"
    user: str | None = None
    password: str | None = None
    nats_token: str | None = None
    creds: str | None = None
    inbox_prefix: str | None = None
    token: str | None = None
    request_timeout: float = 5.0
    connect_timeout: float = 5.0
    poll_interval: float = 0.1

    @classmethod
    def from_env(cls, env: Environment) -> GaterConfig:
        store = env.get("ESDB_GATER_STORE") or sanitise_store(env.name)
        if not STORE_RE.fullmatch(store):
            raise InfrastructureFactoryError(f"ESDB_GATER_STORE must match [A-Za-z0-9_-]{{1,64}}, not {store!r}")
        prefix = env.get("ESDB_GATER_SUBJECT_PREFIX") or "esdb"
        if not _PREFIX_RE.fullmatch(prefix):
            raise InfrastructureFactoryError(f"ESDB_GATER_SUBJECT_PREFIX must match [A-Za-z0-9_-]{{1,32}}: {prefix!r}")
        return cls(
            nats_url=env.get("ESDB_GATER_NATS_URL") or DEFAULT_NATS_URL,
            store=store,
            subject_prefix=prefix,
            user=env.get("ESDB_GATER_NATS_USER") or None,
            password=env.get("ESDB_GATER_NATS_PASSWORD") or None,
            nats_token=env.get("ESDB_GATER_NATS_TOKEN") or None,
            creds=env.get("ESDB_GATER_NATS_CREDS") or None,
            inbox_prefix=env.get("ESDB_GATER_INBOX_PREFIX") or None,
            token=env.get("ESDB_GATER_TOKEN") or None,
            request_timeout=_float(env, "ESDB_GATER_REQUEST_TIMEOUT", 5.0),
            connect_timeout=_float(env, "ESDB_GATER_CONNECT_TIMEOUT", 5.0),
            poll_interval=_float(env, "ESDB_GATER_POLL_INTERVAL", 0.1),
        )

    def connect_options(self) -> dict[str, Any]:
        """nats-py ``connect`` options for the credentials given."""
        opts: dict[str, Any] = {"name": f"eventsourcing_gater {self.store}"}
        if self.user is not None:
            opts["user"] = self.user
            opts["password"] = self.password or ""
        if self.nats_token is not None:
            opts["token"] = self.nats_token
        if self.creds is not None:
            opts["user_credentials"] = self.creds
        if self.inbox_prefix is not None:
            opts["inbox_prefix"] = self.inbox_prefix
        return opts


def create_store_enabled(env: Environment) -> bool:
    """The library's ``CREATE_TABLE`` flag (default yes): create the store when a recorder is made."""
    return bool(strtobool(env.get("CREATE_TABLE") or "yes"))
