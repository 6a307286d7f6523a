"""Wire models of the schema service (``<prefix>.api.<store>.schema.<op>``), SPEC.md §6.

A schema describes one version of one event type: an optional JSON Schema for ``data`` and the
declarative upcaster steps that turn an event of an older version into this shape. The steps
are plain JSON objects with an ``op`` (the catalogue is in docs/api/schema.md#steps; the
semantics in ``shared/upcasting/registry.py``), so every language can read, write and apply them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator

from esdb_gater.shared.models.common import Request, Response

__all__ = [
    "MAX_SCHEMA_VERSION",
    "AddStep",
    "ConvertStep",
    "CopyStep",
    "GetSchemaRequest",
    "JoinStep",
    "ListSchemasRequest",
    "MapStep",
    "NestStep",
    "Path",
    "RegisterSchemaRequest",
    "RemoveStep",
    "RenameStep",
    "SchemaDef",
    "SchemaRecord",
    "SchemaSummary",
    "SchemasResponse",
    "SetStep",
    "SplitStep",
    "Step",
    "UnnestStep",
    "UnregisterSchemaRequest",
    "UpcastRequest",
    "UpcastResponse",
    "UpcastResult",
    "path_segments",
]

MAX_SCHEMA_VERSION: Final = 1_000_000
MAX_STEPS: Final = 256
EventType = Annotated[str, Field(min_length=1, max_length=256)]
SchemaVersion = Annotated[int, Field(ge=1, le=MAX_SCHEMA_VERSION, description="positive integer")]


def path_segments(path: str | list[str]) -> tuple[str, ...]:
    """``"a.b"`` → ``("a", "b")``; a list is taken as the segments themselves (for keys that
    contain dots)."""
    return tuple(path.split(".")) if isinstance(path, str) else tuple(path)


def _check_path(value: Any) -> Any:
    segs = path_segments(value)
    if not segs or any(s == "" for s in segs):
        raise ValueError("a path is a non-empty dotted string or a non-empty list of non-empty keys")
    return value


Path = Annotated[
    str | list[str],
    AfterValidator(_check_path),
    Field(
        description='a field of `data`: "a.b.c" for nested objects, or a list of keys ["a", "b.c"] when a key has a dot'
    ),
]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class RenameStep(_Step):
    """Move the value at ``from`` to ``to`` (rename a field; move it into or out of a nested
    object). Nothing happens when ``from`` is absent; an existing ``to`` is overwritten."""

    op: Literal["rename"]
    from_: Path = Field(alias="from")
    to: Path


class CopyStep(_Step):
    """Copy the value at ``from`` to ``to``; nothing happens when ``from`` is absent."""

    op: Literal["copy"]
    from_: Path = Field(alias="from")
    to: Path


class AddStep(_Step):
    """Add a field with a default value when it is absent (an existing value is kept)."""

    op: Literal["add"]
    path: Path
    value: Any


class SetStep(_Step):
    """Set a field to a constant, whether or not it exists."""

    op: Literal["set"]
    path: Path
    value: Any


class RemoveStep(_Step):
    """Remove a field; nothing happens when it is absent."""

    op: Literal["remove"]
    path: Path


class NestStep(_Step):
    """Move fields into an object at ``into`` (created when absent), each under its last key."""

    op: Literal["nest"]
    fields: list[Path] = Field(min_length=1)
    into: Path


class UnnestStep(_Step):
    """Move every field of the object at ``path`` up to the object that holds it (with
    ``prefix`` before each name), then remove the object. Nothing happens when ``path`` is
    absent or not an object."""

    op: Literal["unnest"]
    path: Path
    prefix: str = ""


class MapStep(_Step):
    """Replace the value at ``path`` through ``table``. Strings are looked up as they are,
    integers by their decimal text, ``true``/``false``/``null`` by those words; a value not in the
    table becomes ``default`` when one is given, else stays."""

    op: Literal["map"]
    path: Path
    table: dict[str, Any]
    default: Any = None


class SplitStep(_Step):
    """Split the string at ``path`` on ``separator`` into at most ``len(into)`` pieces (the last
    one keeps the rest); piece i goes to ``into[i]``, missing pieces become ``""``. The source
    field is removed unless ``keep`` (or it is one of ``into``)."""

    op: Literal["split"]
    path: Path
    separator: str = Field(min_length=1)
    into: list[Path] = Field(min_length=1)
    keep: bool = False


class JoinStep(_Step):
    """Join the strings at ``fields`` (absent or null ones skipped) with ``separator`` into ``to``.
    The sources are removed unless ``keep``. Nothing happens when a present value is not a
    string, or when no field is present."""

    op: Literal["join"]
    fields: list[Path] = Field(min_length=1)
    separator: str = ""
    to: Path
    keep: bool = False


class ConvertStep(_Step):
    """Convert the value at ``path`` to another JSON type (rules in docs/api/schema.md#convert);
    a value that cannot be converted stays as it is."""

    op: Literal["convert"]
    path: Path
    to: Literal["string", "integer", "number", "boolean"]


Step = Annotated[
    RenameStep
    | CopyStep
    | AddStep
    | SetStep
    | RemoveStep
    | NestStep
    | UnnestStep
    | MapStep
    | SplitStep
    | JoinStep
    | ConvertStep,
    Field(discriminator="op"),
]


# JSON object keys are strings: the version keys of ``upcast_from`` ("1") are converted to int
# even though the model is strict (the schema says: property names of digits).
VersionKey = Annotated[int, Strict(False)]


class SchemaDef(BaseModel):
    """One version of an event type's schema (the seed's schema map)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: SchemaVersion
    json_schema: dict[str, Any] | bool | None = Field(
        default=None, description="JSON Schema (draft 2020-12 unless $schema says otherwise) that data must match"
    )
    description: str | None = Field(default=None, max_length=4096)
    upcast_from: dict[VersionKey, list[Step]] = Field(
        default_factory=dict,
        description="from_version -> the steps that turn an event of that version into the next one",
    )

    @field_validator("upcast_from")
    @classmethod
    def _from_versions(cls, value: dict[int, list[Any]], info: ValidationInfo) -> dict[int, list[Any]]:
        version = info.data.get("version")
        for k, steps in value.items():
            if version is not None and not 1 <= k < version:
                raise ValueError(f"key {k} must be between 1 and {version - 1} (the version before this one)")
            if len(steps) > MAX_STEPS:
                raise ValueError(f"upcast_from[{k}] has {len(steps)} steps; at most {MAX_STEPS}")
        return value

    def stored(self) -> dict[str, Any]:
        """The JSON form kept in the bucket and returned by ``get``."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True) | {"version": self.version}


class RegisterSchemaRequest(Request):
    event_type: EventType
    schema_: SchemaDef = Field(alias="schema")


class GetSchemaRequest(Request):
    event_type: EventType
    version: SchemaVersion | None = Field(default=None, description="a registered version; default: the current one")


class ListSchemasRequest(Request):
    pass


class UnregisterSchemaRequest(Request):
    event_type: EventType
    version: SchemaVersion | None = Field(
        default=None, description="remove only this version; default: every version of the type"
    )


class SchemaRecord(Response):
    """A registered schema version, as ``get`` and ``register`` return it."""

    event_type: str
    version: int
    json_schema: dict[str, Any] | bool | None = None
    description: str | None = None
    upcast_from: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    registered_at: int = Field(description="ms since epoch")
    current_version: int = Field(description="the type's highest registered version")
    versions: list[int] = Field(description="every registered version of the type, ascending")

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}


class SchemaSummary(BaseModel):
    event_type: str
    version: int = Field(description="the current (highest) version")
    versions: list[int]
    registered_at: int = Field(description="ms since epoch the current version was registered")
    description: str | None = None


class SchemasResponse(BaseModel):
    schemas: list[SchemaSummary] = Field(description="sorted by event_type")


class UpcastEvent(BaseModel):
    """An event to upcast: anything shaped like a recorded event. Only ``event_type``, ``data``
    and ``metadata.schema_version`` are read; every other field comes back unchanged."""

    model_config = ConfigDict(extra="allow", strict=True)

    event_type: str = Field(min_length=1, max_length=256, validation_alias=AliasChoices("event_type", "type"))
    data: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpcastRequest(Request):
    events: list[UpcastEvent] = Field(max_length=10_000)


class UpcastResult(BaseModel):
    """An upcast event: the request's event with ``data`` and ``metadata.schema_version`` at the
    type's current version (unchanged when the type has no schema or is already current)."""

    model_config = ConfigDict(extra="allow")

    event_type: str
    data: Any
    metadata: dict[str, Any]


class UpcastResponse(Response):
    events: list[UpcastResult]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> UpcastResponse:
        return cls.model_construct(events=rows)  # type: ignore[arg-type]  # dicts stand in for UpcastResult

    def to_wire(self) -> dict[str, Any]:
        return {"events": [e if isinstance(e, dict) else e.model_dump(mode="python") for e in self.events]}
