"""Write docs/api/asyncapi.json, the AsyncAPI 3.0 document of every subject, from the models.

    .venv/bin/python tools/gen_asyncapi.py           # (re)generate
    .venv/bin/python tools/gen_asyncapi.py --check   # exit 1 if stale or invalid (CI)

Like tools/gen_schemas.py, it walks the op tables of every service (``SERVICE_TABLES``), so a new
op appears without touching this file. For each public op ``<prefix>.api.<store>.<service>.<op>``
it writes a channel (parameters ``prefix`` and, for per-store ops, ``store``), the request
message, a reply channel (the request's NATS reply subject) with the reply message and the error
envelope (ADR 0001, with the ADR-32 headers ``Nats-Service-Error`` and
``Nats-Service-Error-Code``), and a ``receive`` operation with that reply. Deliveries the services
send are ``send`` operations: channel messages on ``<prefix>.ch.<channel>.<topic>`` and
persistent-subscription events on the client's ``subscriber`` subject.

Payload schemas are those of docs/api/schemas/ (the same pydantic models and the same
``_patch`` of tools/gen_schemas.py), made self-contained under ``components.schemas``.

``--check`` also validates the document against the official AsyncAPI 3.0.0 JSON Schema,
vendored as tools/asyncapi-3.0.0.schema.json (from the npm package ``@asyncapi/specs`` 6.11.1,
``schemas/3.0.0-without-$id.json``; Apache-2.0, see tools/README.md), so CI needs no network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from esdb_gater.shared.core.codec import JSON, MSGPACK  # noqa: E402
from esdb_gater.shared.core.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorCode  # noqa: E402
from esdb_gater.shared.models.channel import Delivery  # noqa: E402
from esdb_gater.shared.models.stream import RecordedEvent  # noqa: E402
from tools.gen_schemas import SERVICE_TABLES, ErrorEnvelope, _models, _patch_object  # noqa: E402

OUT = ROOT / "docs" / "api" / "asyncapi.json"
SPEC_SCHEMA = ROOT / "tools" / "asyncapi-3.0.0.schema.json"
REF = "#/components/schemas/{model}"
JSON_CT, MSGPACK_CT = JSON.content_type, MSGPACK.content_type

Mode = Literal["validation", "serialization"]


def _version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _ops() -> list[tuple[str, Any]]:
    """(subject token, op) of every public op, in op-table order."""
    out: list[tuple[str, Any]] = []
    for service_token, ops in SERVICE_TABLES:
        for op in ops:
            if getattr(op, "internal", False):  # services-only subjects share the public op's models
                continue
            out.append((op.token or service_token, op))
    return out


def _schemas(
    wanted: list[tuple[type[BaseModel], Mode]],
) -> tuple[dict[tuple[type[BaseModel], Mode], dict[str, Any]], dict[str, Any]]:
    """Every model's JSON Schema in one namespace (pydantic names clashing models apart), with the
    rules the models check in code added as in docs/api/schemas/."""
    unique = list(dict.fromkeys(wanted))
    out, top = models_json_schema(
        [(m, "validation" if mode == "validation" else "serialization") for m, mode in unique],
        ref_template=REF,
    )
    keys = cast(dict[tuple[type[BaseModel], Mode], dict[str, Any]], out)  # only models went in
    defs: dict[str, Any] = top.get("$defs", {})
    by_name: dict[str, type[BaseModel]] = {}  # top-level request models by their definition's name
    by_title: dict[str, set[type[BaseModel]]] = {}  # every model by class name (the schema's title)
    inputs: set[type[BaseModel]] = set()
    for (model, mode), ref in keys.items():
        if mode == "validation":
            by_name[ref["$ref"].rsplit("/", 1)[1]] = model
        for nested in _models(model).values():
            by_title.setdefault(nested.__name__, set()).add(nested)
            if mode == "validation":
                inputs.add(nested)
    for name, sub in defs.items():
        owner = by_name.get(name)
        if owner is None and not name.endswith("-Output"):
            same = by_title.get(sub.get("title", ""), set())
            owner = next(iter(same)) if len(same) == 1 and same <= inputs else None
        if owner is not None:
            _patch_object(sub, owner)
    refs: dict[tuple[type[BaseModel], Mode], dict[str, Any]] = {
        (m, "validation" if mode == "validation" else "serialization"): r for (m, mode), r in keys.items()
    }
    return refs, {k: _asyncapi_schema(v) for k, v in sorted(defs.items())}


def _asyncapi_schema(node: Any) -> Any:
    """pydantic writes OpenAPI's ``discriminator`` object; an AsyncAPI Schema Object's is the
    property name only (the ``oneOf`` branches still say which is which)."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        disc = out.get("discriminator")
        if isinstance(disc, dict) and "propertyName" in disc:
            out["discriminator"] = disc["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _param(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, **extra}


def _string_headers(*names: str) -> dict[str, Any]:
    """The schema of a message's headers: each named one a string."""
    return {"type": "object", "properties": {h: {"type": "string"} for h in names}}


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _key(token: str, op: str) -> str:
    return f"{token}.{op}"


def build() -> dict[str, Any]:
    ops = _ops()
    wanted: list[tuple[type[BaseModel], Mode]] = []
    for _, op in ops:
        wanted += [(op.request, "validation"), (op.response, "serialization")]
    wanted += [(ErrorEnvelope, "serialization"), (Delivery, "serialization"), (RecordedEvent, "serialization")]
    refs, defs = _schemas(wanted)

    request_headers = {
        "type": "object",
        "properties": {
            "Content-Type": {
                "type": "string",
                "enum": [JSON_CT, MSGPACK_CT],
                "description": f"the codec of the body and of the reply; {JSON_CT} when absent (ADR 0003)",
            },
            "traceparent": {"type": "string", "description": "W3C trace context; the service continues the trace"},
            "Authorization": {
                "type": "string",
                "pattern": "^Bearer ",
                "description": "`Bearer <capability token>` when security.capability_mode asks (docs/security.md)",
            },
        },
    }
    reply_headers = {
        "type": "object",
        "properties": {"Content-Type": {"type": "string", "enum": [JSON_CT, MSGPACK_CT]}},
    }
    error_headers = {
        "type": "object",
        "required": [ERROR_HEADER, ERROR_CODE_HEADER],
        "properties": {
            ERROR_HEADER: {"type": "string", "description": "the error message (ADR-32)"},
            ERROR_CODE_HEADER: {
                "type": "string",
                "pattern": "^[0-9]{3}$",
                "description": "HTTP-like status of the error code (ADR-32; docs/errors.md)",
            },
            "Content-Type": {"type": "string", "enum": [JSON_CT, MSGPACK_CT]},
        },
    }

    messages: dict[str, Any] = {
        "error": {
            "name": "error",
            "title": "Error reply",
            "summary": "the error envelope any op can answer with (docs/errors.md, ADR 0001)",
            "headers": error_headers,
            "payload": refs[(ErrorEnvelope, "serialization")],
            "x-error-codes": [c.value for c in ErrorCode],
        }
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for token, op in ops:
        key = _key(token, op.name)
        per_store = op.scope != "global"
        store = "{store}" if per_store else "_"
        params: dict[str, Any] = {"prefix": _ref("#/components/parameters/prefix")}
        if per_store:
            params["store"] = _ref("#/components/parameters/store")
        messages[f"{key}.request"] = {
            "name": f"{key}.request",
            "title": f"{key} request",
            "summary": op.description or op.name,
            "headers": request_headers,
            "payload": refs[(op.request, "validation")],
            "x-schema-file": f"schemas/{key}.request.json",
        }
        messages[f"{key}.reply"] = {
            "name": f"{key}.reply",
            "title": f"{key} reply",
            "headers": reply_headers,
            "payload": refs[(op.response, "serialization")],
            "x-schema-file": f"schemas/{key}.reply.json",
        }
        channels[key] = {
            "address": f"{{prefix}}.api.{store}.{token}.{op.name}",
            "title": f"{token}.{op.name}",
            "description": op.description or op.name,
            "parameters": params,
            "messages": {"request": _ref(f"#/components/messages/{key}.request")},
        }
        channels[f"{key}.reply"] = {
            "address": None,
            "description": f"the reply to {key}: the request's NATS reply subject (an inbox)",
            "messages": {
                "reply": _ref(f"#/components/messages/{key}.reply"),
                "error": _ref("#/components/messages/error"),
            },
        }
        operations[key] = {
            "action": "receive",
            "title": key,
            "summary": op.description or op.name,
            "channel": _ref(f"#/channels/{key}"),
            "messages": [_ref(f"#/channels/{key}/messages/request")],
            "reply": {
                "channel": _ref(f"#/channels/{key}.reply"),
                "messages": [
                    _ref(f"#/channels/{key}.reply/messages/reply"),
                    _ref(f"#/channels/{key}.reply/messages/error"),
                ],
            },
        }

    # what the services send on their own
    messages["channel.delivery"] = {
        "name": "channel.delivery",
        "title": "Channel message",
        "summary": "a message published on a channel topic (docs/api/channel.md)",
        "headers": {
            "type": "object",
            "properties": {"Esdb-Seq": {"type": "string", "description": "durable channels: the message's sequence"}},
        },
        "payload": refs[(Delivery, "serialization")],
        "x-schema-file": "schemas/channel.delivery.json",
    }
    channels["channel.delivery"] = {
        "address": "{prefix}.ch.{channel}.{topic}",
        "title": "channel deliveries",
        "description": "every accepted publish, delivered to core NATS subscribers (wildcards work on the topic)",
        "parameters": {
            "prefix": _ref("#/components/parameters/prefix"),
            "channel": _param(
                "the channel name (docs/api/channel.md; the table can add channels)",
                examples=["alerts", "events", "diagnostics"],
            ),
            "topic": _param("the publish's topic: 1 to 16 dot-separated tokens", examples=["disk.full"]),
        },
        "messages": {"delivery": _ref("#/components/messages/channel.delivery")},
    }
    operations["channel.deliver"] = {
        "action": "send",
        "title": "channel.deliver",
        "summary": "the channel service delivers each accepted publish",
        "channel": _ref("#/channels/channel.delivery"),
        "messages": [_ref("#/channels/channel.delivery/messages/delivery")],
    }
    messages["subscription.delivery"] = {
        "name": "subscription.delivery",
        "title": "Subscription delivery",
        "summary": "one event of a persistent subscription; reply to the message to acknowledge it",
        "contentType": JSON_CT,
        "headers": _string_headers(
            "Esdb-Subscription",
            "Esdb-Subscription-Key",
            "Esdb-Stream-Id",
            "Esdb-Version",
            "Esdb-Position",
            "Esdb-Delivery-Attempt",
            "Content-Type",
        ),
        "payload": refs[(RecordedEvent, "serialization")],
    }
    messages["subscription.batch"] = {
        "name": "subscription.batch",
        "title": "Subscription batch delivery",
        "summary": "several events of a subscription saved with delivery 'batch' (ADR 0024), in log order; "
        "one reply acknowledges them all",
        "contentType": JSON_CT,
        "headers": _string_headers(
            "Esdb-Subscription",
            "Esdb-Subscription-Key",
            "Esdb-Batch-Count",
            "Esdb-Batch-First-Position",
            "Esdb-Batch-Last-Position",
            "Esdb-Delivery-Attempt",
            "Content-Type",
        ),
        "payload": {
            "type": "object",
            "properties": {"events": {"type": "array", "items": refs[(RecordedEvent, "serialization")]}},
            "required": ["events"],
        },
    }
    channels["subscription.delivery"] = {
        "address": "{subscriber}",
        "title": "persistent subscription deliveries",
        "description": "the subscription's `subscriber` subject (docs/api/subscription.md#delivery)",
        "parameters": {
            "subscriber": _param("the `subscriber` subject of subscription.save", examples=["billing.orders"])
        },
        "messages": {
            "delivery": _ref("#/components/messages/subscription.delivery"),
            "batch": _ref("#/components/messages/subscription.batch"),
        },
    }
    operations["subscription.deliver"] = {
        "action": "send",
        "title": "subscription.deliver",
        "summary": "the subscription service delivers each event; an empty reply or +ACK acknowledges, -NAK redelivers",
        "channel": _ref("#/channels/subscription.delivery"),
        "messages": [
            _ref("#/channels/subscription.delivery/messages/delivery"),
            _ref("#/channels/subscription.delivery/messages/batch"),
        ],
    }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "esdb-gater",
            "version": _version(),
            "description": (
                "An event store reached over NATS: request/reply subjects of every service, their "
                "payloads, replies and errors, and the messages the services deliver. Generated by "
                "tools/gen_asyncapi.py from the models in shared/models/; the same payloads as "
                "single files: docs/api/schemas/. Bodies are JSON, or msgpack with "
                f"`Content-Type: {MSGPACK_CT}`."
            ),
            "license": {"name": "see the repository"},
        },
        "defaultContentType": JSON_CT,
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`gater up` (any NATS server or cluster the services are connected to)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": defs,
            "messages": dict(sorted(messages.items())),
            "parameters": {
                "prefix": _param("the deployment's subject prefix (settings.subject_prefix)", default="esdb"),
                "store": _param("the store id ([A-Za-z0-9_-]{1,64})", examples=["demo"]),
            },
        },
    }


def render(doc: dict[str, Any]) -> str:
    # pydantic names clashing models by module path; the published names predate the esdb_gater
    # namespace (shared__models__stream__ListRequest), so the prefix is left out
    return json.dumps(doc, indent=2, ensure_ascii=False).replace("esdb_gater__shared__", "shared__") + "\n"


def validate(doc: dict[str, Any]) -> list[str]:
    """Errors of ``doc`` against the official AsyncAPI 3.0.0 JSON Schema (Draft 7)."""
    from jsonschema import Draft7Validator

    schema = json.loads(SPEC_SCHEMA.read_text())
    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale or not valid AsyncAPI 3.0.0")
    args = parser.parse_args(argv)
    doc = build()
    problems = validate(doc)
    for p in problems:
        print(f"not valid AsyncAPI 3.0.0: {p}")
    if args.check:
        stale = not OUT.exists() or OUT.read_text() != render(doc)
        if stale:
            print(f"stale or missing: {OUT}\nrun: .venv/bin/python tools/gen_asyncapi.py")
        if stale or problems:
            return 1
        print(f"{OUT.relative_to(ROOT)} up to date and valid AsyncAPI 3.0.0 ({len(doc['operations'])} operations)")
        return 0
    if problems:
        return 1
    OUT.write_text(render(doc))
    print(f"wrote {OUT.relative_to(ROOT)} ({len(doc['operations'])} operations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
