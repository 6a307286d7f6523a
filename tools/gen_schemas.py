"""Write the JSON Schema of every request and reply of the services to docs/api/schemas/.

    .venv/bin/python tools/gen_schemas.py           # (re)generate
    .venv/bin/python tools/gen_schemas.py --check   # exit 1 if the checked-in files are stale

The pydantic models in ``shared/models/`` are the source of truth; this tool walks the op
tables in ``SERVICE_TABLES`` (one entry per subject), so a new op gets its schemas without
touching this file. File names follow the subject: ``<service>.<op>.request.json`` and
``<service>.<op>.reply.json`` for ``<prefix>.api.<store>.<service>.<op>``, plus ``error.json``
for the error envelope every op can answer with.

pydantic cannot express a few rules that the models check in code; ``_patch`` adds them so
that a client generated from the schema agrees with the service:

* alias choices (``type`` for ``event_type``) become extra properties, and a required aliased
  field becomes "at least one of these names is required";
* fields a read event carries but an append ignores (``exclude=True``) say so;
* ``stream_id`` is 1 to 256 bytes of UTF-8 (checked in ``shared/models/common.py``);
* ``expected_version`` is -1, -2, -4 or >= 0 (checked in ``AppendRequest._expected``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from esdb_gater.services import SERVICES  # noqa: E402
from esdb_gater.shared.core.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorCode  # noqa: E402
from esdb_gater.shared.core.subjects import MAX_STREAM_ID_BYTES  # noqa: E402
from esdb_gater.shared.models.channel import Delivery  # noqa: E402

OUT = ROOT / "docs" / "api" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# (the <service> token of ops that do not name their own, op table)
# every service under services/ (discovered like the runner does): a new service or op gets its
# schemas without touching this file
SERVICE_TABLES: list[tuple[str, list[Any]]] = [
    (name, importlib.import_module(module).OPS) for name, module in SERVICES.items()
]


class ErrorBody(BaseModel):
    """The body of an error reply (docs/errors.md, docs/adr/0001-error-envelope-and-codes.md)."""

    code: ErrorCode = Field(description="stable snake_case code; the list is append-only")
    message: str = Field(description="human-readable; also sent in the Nats-Service-Error header")
    retryable: bool = Field(description="true when the same request may succeed if sent again later")
    details: dict[str, Any] = Field(description="code-specific facts, e.g. expected/actual, field/reason; may be {}")


class ErrorEnvelope(BaseModel):
    __doc__ = (
        "Every error reply: this body plus the ADR-32 headers "
        f"{ERROR_HEADER} (message) and {ERROR_CODE_HEADER} (HTTP-like status)."
    )

    error: ErrorBody


def _aliases(model: type[BaseModel]) -> dict[str, list[str]]:
    """Field name -> the extra names it accepts on input (beyond the first alias choice)."""
    out: dict[str, list[str]] = {}
    for field in model.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names = [c for c in alias.choices if isinstance(c, str)]
            if len(names) > 1:
                out[names[0]] = names[1:]
    return out


def _models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The model and every model nested in its fields, by title."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[Any] = [model]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t.__name__ in found:
                continue
            found[t.__name__] = t
            stack.extend(f.annotation for f in t.model_fields.values())
        stack.extend(getattr(t, "__args__", ()))
    return found


def _patch_object(schema: dict[str, Any], model: type[BaseModel]) -> None:
    props: dict[str, Any] = schema.get("properties", {})
    for name, extra in _aliases(model).items():
        for alt in extra:
            props[alt] = {**props[name], "description": f"alias of `{name}` (input only)"}
        if name in schema.get("required", []):
            schema["required"].remove(name)
            if not schema["required"]:
                del schema["required"]
            schema["anyOf"] = [{"required": [n]} for n in (name, *extra)]
    for name, field in model.model_fields.items():
        if field.exclude and name in props:
            props[name]["description"] = "read-only field of a read event: accepted and ignored on input"
    sid = props.get("stream_id")
    if sid is not None and sid.get("type") == "string":
        sid.update(
            minLength=1,
            maxLength=MAX_STREAM_ID_BYTES,
            description=f"any UTF-8 text of 1 to {MAX_STREAM_ID_BYTES} bytes (maxLength counts characters; "
            "the service counts bytes)",
        )
    ev = props.get("expected_version")
    if ev is not None:
        ev["anyOf"] = [{"enum": [-1, -2, -4]}, {"minimum": 0}]


def _patch(schema: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    nested = _models(model)
    _patch_object(schema, model)
    for title, sub in schema.get("$defs", {}).items():
        if title in nested:
            _patch_object(sub, nested[title])
    return schema


def _document(
    model: type[BaseModel], mode: Literal["validation", "serialization"], file: str, subject: str, kind: str
) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode)
    if mode == "validation":
        schema = _patch(schema, model)
    head: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": file,
        "title": f"{subject} {kind}" if subject else kind,
    }
    if schema.get("description"):
        head["description"] = schema.pop("description")
    schema.pop("title", None)
    return {**head, **schema}


def build() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every op of every service in SERVICE_TABLES and the error envelope."""
    files: dict[str, dict[str, Any]] = {}
    for service_token, ops in SERVICE_TABLES:
        for op in ops:
            if getattr(op, "internal", False):  # services-only subjects share the public op's models
                continue
            token = op.token or service_token
            store = "_" if op.scope == "global" else "<store>"
            subject = f"<prefix>.api.{store}.{token}.{op.name}"
            req = f"{token}.{op.name}.request.json"
            rep = f"{token}.{op.name}.reply.json"
            files[req] = _document(op.request, "validation", req, subject, "request")
            files[rep] = _document(op.response, "serialization", rep, subject, "reply")
    files["error.json"] = _document(ErrorEnvelope, "serialization", "error.json", "", "error reply of any op")
    files["channel.delivery.json"] = _document(
        Delivery, "serialization", "channel.delivery.json", "<prefix>.ch.<channel>.<topic>", "message"
    )
    return files


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is missing, stale or extra")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [n for n, s in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != render(s)]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        for n in stale:
            print(f"stale or missing: {OUT / n}")
        for n in extra:
            print(f"not generated by this tool: {OUT / n}")
        if stale or extra:
            print("run: .venv/bin/python tools/gen_schemas.py")
            return 1
        print(f"{len(files)} schemas up to date")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.json"):
        if p.name not in files:
            p.unlink()
    for name, schema in files.items():
        (OUT / name).write_text(render(schema))
    print(f"wrote {len(files)} schemas to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
