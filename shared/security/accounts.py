"""The NATS accounts layout of secure mode: tenants isolated by accounts (ADR 0014).

One **services account** (``ESDB``, JetStream enabled) holds the gateway: one user per service,
each allowed to publish and subscribe only where that service does (read from the services' code
and checked against a traced run; the table is ``SERVICE_PERMISSIONS``). Each **tenant account**
(``DEMO``, ``ORDERS``, ``BILLING`` by default) holds a tenant's users. Nothing crosses between
accounts except what the services account exports and a tenant imports:

* ``<prefix>.api.<store>.>`` of the tenant's stores, as a *service* (one reply per request). NATS
  rewrites the tenant's reply subject to ``_R_.…`` in the services account, so a reply goes back
  to the asking tenant and nowhere else, whatever reply subject the tenant names.
* ``deliver.<store>.>`` as a *stream*: where persistent subscriptions of the tenant's stores
  deliver (``security.target_allow`` keeps each store's ``subscriber`` under it).
* optionally the channel API (``<prefix>.api._.channel.>``, shared by every tenant granted it) and
  channel subjects ``<prefix>.ch.<channel>.>`` to read.

A tenant's ``>`` subscription therefore sees its own traffic only: not another tenant's requests,
replies or events, nor the services' ``_INBOX`` JetStream traffic (another account), and its
``$JS.API`` is its own account's, which has no JetStream.

``python -m esdb_gater.shared.security.accounts`` prints the layout (``nats/accounts.conf`` is that output; a unit test
keeps them equal); ``--env`` prints fresh passwords for every user as a ``.env`` file for
compose.yaml. Passwords are never in the layout: each user's is ``$ESDB_<USER>_PASSWORD``, taken
from nats-server's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_TENANTS",
    "OPS_USER",
    "PASSWORDS_FILE",
    "SERVICE_ACCOUNT",
    "SERVICE_PERMISSIONS",
    "Tenant",
    "deliver_prefix",
    "load_or_create_passwords",
    "password_env",
    "render",
    "secure_settings",
    "service_users",
    "users",
]

SERVICE_ACCOUNT = "ESDB"
PASSWORDS_FILE = "secure-passwords.json"


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant account: its users reach ``stores`` (and read ``channels``; ``"*"`` = all)."""

    account: str
    user: str
    stores: tuple[str, ...]
    channels: tuple[str, ...] = ()
    channel_api: bool = False
    description: str = field(default="", compare=False)


DEFAULT_TENANTS: tuple[Tenant, ...] = (
    Tenant(
        "DEMO",
        "demo",
        ("demo",),
        channels=("*",),
        channel_api=True,
        description="the walk-through tenant: store demo, the channel API and every channel",
    ),
    Tenant("ORDERS", "orders", ("orders",), description="store orders only"),
    Tenant("BILLING", "billing", ("billing",), description="store billing only"),
)


def deliver_prefix(store: str) -> str:
    """Where persistent subscriptions (and channel forwardings) of ``store`` may deliver."""
    return f"deliver.{store}."


def password_env(user: str) -> str:
    """The environment variable nats-server reads a user's password from."""
    return "ESDB_" + user.upper().replace("-", "_") + "_PASSWORD"


# What each service publishes and subscribes, beyond what every service does (`_COMMON`; and
# answering requests: `allow_responses`). `{p}` is the subject prefix. Derived from the services'
# code and a traced run of their integration tests (each service on its own connection);
# tests/security/test_accounts.py fails on any permission violation by a service user.
# JetStream API subjects are allowed per verb: stream and bucket names are one subject token
# (`esdb-log-demo`), which NATS wildcards cannot narrow to a name prefix.
_JS_READ = [
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.STREAM.MSG.GET.*",
]
_JS_CREATE = ["$JS.API.STREAM.CREATE.*"]
_JS_CONSUME = [
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.DELETE.*.*",
    "$JS.API.CONSUMER.MSG.NEXT.*.*",
    "$JS.ACK.>",
]

# Every service: its own inbox (the connection's inbox prefix is `_INBOX.<user>`), ADR-32
# discovery (answered; and `$SRV.PING.<name>.<id>` sent by the container health check,
# shared/tooling/probe.py, which connects as the container's service user), its services-only
# endpoints, and the KV bucket of the services' shared key (shared/security/authz.py: read, or created
# by the first process).
_COMMON: dict[str, list[str]] = {
    "publish": ["$KV.{p}-security.>", "$SRV.PING.>"],
    "subscribe": ["_INBOX.{svc}.>", "$SRV.>", "{p}.internal.*.{svc}.>"],
}

SERVICE_PERMISSIONS: dict[str, dict[str, list[str]]] = {
    "stream": {
        "publish": ["{p}.log.>", "{p}.ix.>", *_JS_READ, *_JS_CREATE, "$JS.API.STREAM.PURGE.*"],
        # {p}.internal.*.store.>: stores made on first use for another service's write (ADR 0016)
        "subscribe": ["{p}.api.*.stream.>", "{p}.api.*.store.>", "{p}.internal.*.store.>", "$KV.*.>"],
    },
    "subscription": {
        "publish": [
            "deliver.>",
            "{p}.dlq.>",
            "$KV.{p}-subscriptions.>",
            "{p}.api.*.store.>",
            "{p}.api.*.subscription.ctl.>",  # ack/replay_parked forwarded to the delivering instance
            "{p}.internal.*.store.create",
            *_JS_READ,
            *_JS_CREATE,
            "$JS.API.STREAM.PURGE.*",
            *_JS_CONSUME,
        ],
        "subscribe": ["{p}.api.*.subscription.>", "$KV.*.>"],
    },
    "snapshot": {
        "publish": [
            "$KV.*.>",
            "$O.*.>",
            "{p}.internal.*.store.create",
            *_JS_READ,
            *_JS_CREATE,
            "$JS.API.STREAM.PURGE.*",
        ],
        "subscribe": ["{p}.api.*.snapshot.>"],
    },
    "schema": {
        "publish": ["$KV.*.>", "{p}.internal.*.store.create", *_JS_READ, *_JS_CREATE],
        "subscribe": ["{p}.api.*.schema.>", "$KV.*.>"],
    },
    "channel": {
        "publish": [
            "{p}.ch.>",
            "{p}.chlog.>",
            "{p}.chrate.>",
            "{p}.chreplay",
            "deliver.>",
            "$KV.{p}-chsubs.>",
            *_JS_READ,
            *_JS_CREATE,
            "$JS.API.STREAM.UPDATE.*",
            *_JS_CONSUME,
        ],
        "subscribe": ["{p}.api._.channel.>"],
    },
    "link": {
        "publish": [
            "$KV.{p}-links.>",
            "{p}.api.*.stream.>",
            "{p}.api.*.store.>",
            "{p}.internal.*.stream.>",
            "{p}.internal.*.store.create",
            *_JS_READ,
            *_JS_CREATE,
            *_JS_CONSUME,
        ],
        "subscribe": ["{p}.api.*.link.>", "$KV.{p}-links.>"],
    },
    "scavenger": {
        "publish": [
            "$KV.{p}-scavenger.>",
            "$O.*.>",
            "{p}.api.*.stream.>",
            "{p}.api.*.snapshot.>",
            "{p}.api.*.store.>",
            *_JS_READ,
            *_JS_CREATE,
            "$JS.API.STREAM.PURGE.*",
            *_JS_CONSUME,
        ],
        "subscribe": ["{p}.api.*.scavenger.>"],
    },
    "causation": {
        "publish": ["{p}.ix.>", *_JS_READ, *_JS_CREATE, *_JS_CONSUME],
        "subscribe": ["{p}.api.*.causation.>", "$KV.*.>"],
    },
    "health": {
        "publish": ["$JS.API.INFO", *_JS_READ, *_JS_CREATE, "$SRV.PING", "$SRV.PING.>"],
        "subscribe": ["{p}.api.*.health.>", "{p}.api.*.memory.>"],
    },
}


# An operator's user in the services account: ADR-32 discovery (`nats micro ls`, with
# `--inbox-prefix _INBOX.ops`) and the health service, nothing else.
OPS_USER = "ops"
OPS_PERMISSIONS: dict[str, list[str]] = {
    "publish": ["$SRV.>", "{p}.api._.health.>", "{p}.api._.memory.>"],
    "subscribe": ["_INBOX.ops.>"],
}


def service_users() -> list[str]:
    """The services account's users: one per service, named like the service."""
    return list(SERVICE_PERMISSIONS)


def users(tenants: tuple[Tenant, ...] = DEFAULT_TENANTS) -> list[str]:
    """Every user of the layout: the services', the operator's, then the tenants'."""
    return [*service_users(), OPS_USER] + [t.user for t in tenants]


def _q(subject: str) -> str:
    return json.dumps(subject)


def _list(items: list[str], indent: str) -> str:
    return "[\n" + "".join(f"{indent}  {_q(s)}\n" for s in items) + f"{indent}]"


def _channel_subjects(prefix: str, t: Tenant) -> list[str]:
    if "*" in t.channels:
        return [f"{prefix}.ch.>"]
    return [f"{prefix}.ch.{c}.>" for c in t.channels]


def render(prefix: str = "esdb", tenants: tuple[Tenant, ...] = DEFAULT_TENANTS) -> str:
    """The ``accounts { … }`` block (a fragment to include in a server config with JetStream)."""
    out: list[str] = [
        "# The tenant accounts layout of secure mode (docs/adr/0014-tenant-accounts.md).",
        "# GENERATED by `python -m esdb_gater.shared.security.accounts` from shared/security/accounts.py:",
        "# edit that, not this file.",
        "#",
        "# A fragment: include it from a server config that has `jetstream {}` (nats/compose/*.conf do;",
        "# nats/cluster/*.conf have the line commented out). Passwords come from nats-server's",
        "# environment ($ESDB_<USER>_PASSWORD, e.g. from",
        "# `python -m esdb_gater.shared.security.accounts --env > .env`).",
        "# Services connect as their user with the inbox prefix _INBOX.<user> (ESDB_GATER_NATS_USER,",
        "# ESDB_GATER_NATS_PASSWORD); tenants connect as theirs and see only their own account.",
        "#",
        f"#   {SERVICE_ACCOUNT:<9} the services, JetStream enabled, one least-privilege user per service;",
        f"#             user {OPS_USER}: $SRV discovery and health only"
        f" (`nats --inbox-prefix _INBOX.{OPS_USER} micro ls`)",
    ]
    for t in tenants:
        out.append(f"#   {t.account:<9} user {t.user}: {t.description or ', '.join(t.stores)}")
    out += ["", "accounts {", f"  {SERVICE_ACCOUNT} {{", "    jetstream: enabled", "    users: ["]
    for name, perms in SERVICE_PERMISSIONS.items():
        pub = [s.format(p=prefix, svc=name) for s in _COMMON["publish"] + perms["publish"]]
        sub = [s.format(p=prefix, svc=name) for s in _COMMON["subscribe"] + perms["subscribe"]]
        ind = "          "
        out += [
            "      {",
            f"        user: {name}",
            f"        password: ${password_env(name)}",
            "        permissions: {",
            f"          publish: {_list(pub, ind)}",
            f"          subscribe: {_list(sub, ind)}",
            "          allow_responses: true",
            "        }",
            "      }",
        ]
    ops_pub = [s.format(p=prefix) for s in OPS_PERMISSIONS["publish"]]
    ops_sub = [s.format(p=prefix) for s in OPS_PERMISSIONS["subscribe"]]
    ind = "          "
    out += [
        "      {",
        f"        user: {OPS_USER}",
        f"        password: ${password_env(OPS_USER)}",
        "        permissions: {",
        f"          publish: {_list(ops_pub, ind)}",
        f"          subscribe: {_list(ops_sub, ind)}",
        "        }",
        "      }",
    ]
    out += ["    ]", "    exports: ["]
    for t in tenants:
        for store in t.stores:
            out.append(
                f"      {{service: {_q(f'{prefix}.api.{store}.>')}, response_type: singleton, accounts: [{t.account}]}}"
            )
            out.append(f"      {{stream: {_q(deliver_prefix(store) + '>')}, accounts: [{t.account}]}}")
    api_users = [t.account for t in tenants if t.channel_api]
    if api_users:
        out.append(
            f"      {{service: {_q(f'{prefix}.api._.channel.>')}, response_type: singleton, "
            f"accounts: [{', '.join(api_users)}]}}"
        )
    readers: dict[str, list[str]] = {}
    for t in tenants:
        for subject in _channel_subjects(prefix, t):
            readers.setdefault(subject, []).append(t.account)
    for subject, accounts in readers.items():
        out.append(f"      {{stream: {_q(subject)}, accounts: [{', '.join(accounts)}]}}")
    out += ["    ]", "  }"]
    for t in tenants:
        out += [
            f"  {t.account} {{",
            f"    users: [{{user: {t.user}, password: ${password_env(t.user)}}}]",
            "    imports: [",
        ]
        for store in t.stores:
            out.append(f"      {{service: {{account: {SERVICE_ACCOUNT}, subject: {_q(f'{prefix}.api.{store}.>')}}}}}")
            out.append(f"      {{stream: {{account: {SERVICE_ACCOUNT}, subject: {_q(deliver_prefix(store) + '>')}}}}}")
        if t.channel_api:
            out.append(f"      {{service: {{account: {SERVICE_ACCOUNT}, subject: {_q(f'{prefix}.api._.channel.>')}}}}}")
        for subject in _channel_subjects(prefix, t):
            out.append(f"      {{stream: {{account: {SERVICE_ACCOUNT}, subject: {_q(subject)}}}}}")
        out += ["    ]", "  }"]
    out.append("}")
    return "\n".join(out) + "\n"


def secure_settings(tenants: tuple[Tenant, ...] = DEFAULT_TENANTS) -> dict[str, object]:
    """Settings the services need under this layout: each store's ``subscriber`` under its
    ``deliver.<store>.``, and channel forwardings (``deliver_to``) only under the ``deliver.``
    spaces of tenants with the channel API. A client-named target is published in the services
    account, so it must be a subject exported to the tenant; the services' own ``_INBOX.`` never is."""
    forward = [deliver_prefix(store) for t in tenants if t.channel_api for store in t.stores]
    # store "_" is the channel service's: its deliver_to allow-list (empty: no forwarding at all)
    target_allow = {store: [deliver_prefix(store)] for t in tenants for store in t.stores} | {"_": forward}
    settings: dict[str, object] = {"security": {"target_allow": target_allow}}
    if forward:
        settings["channels"] = {"deliver_prefixes": forward}
    return settings


def new_password() -> str:
    """A random password nats-server's config parser reads as a string (starts with a letter)."""
    return "p" + secrets.token_hex(16)


def load_or_create_passwords(data_dir: Path, tenants: tuple[Tenant, ...] = DEFAULT_TENANTS) -> dict[str, str]:
    """Every user's password, from ``<data_dir>/secure-passwords.json`` (created 0600 with
    random passwords, and completed for users added since)."""
    path = data_dir / PASSWORDS_FILE
    known: dict[str, str] = {}
    if path.exists():
        known = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    wanted = {u: known.get(u) or new_password() for u in users(tenants)}
    if wanted != known:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(wanted, indent=2) + "\n")
        tmp.replace(path)
    path.chmod(0o600)
    return wanted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m esdb_gater.shared.security.accounts", description="the secure-mode NATS accounts layout"
    )
    p.add_argument("--prefix", default="esdb", help="subject prefix (default esdb)")
    p.add_argument("--env", action="store_true", help="print fresh passwords for every user as a .env file")
    args = p.parse_args(argv)
    if args.env:
        for user in users():
            print(f"{password_env(user)}={new_password()}")
        return 0
    sys.stdout.write(render(args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
