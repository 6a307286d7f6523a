"""Declarative upcasting and the schema registry every reader of events uses (SPEC.md §6).

Two halves:

* **Steps and chains** (pure, no I/O). A step is a JSON object such as
  ``{"op": "rename", "from": "customer", "to": "customer_id"}`` (the catalogue:
  ``shared/models/schema.py`` and docs/api/schema.md#steps). ``compile_step`` turns one into a
  function over an event's ``data``; ``TypeSchemas`` resolves, per event type, the steps from
  every version to the current one and caches one compiled chain per (type, from_version).
  Steps never fail: a step whose field is absent or has the wrong type does nothing, so a read
  never fails because of an old event. Steps never modify the objects they are given (nested
  objects are copied before they are written: copy on write).
* **``SchemaRegistry``**: the schemas of each store, loaded from the store's KV bucket
  ``<prefix>-schema-<store>`` on first use and kept current by watching the bucket's subjects
  (docs/adr/0006-schema-registry-and-upcasting.md). The stream service validates appends and
  upcasts reads with it; the subscription and schema services call the same API::

      registry = SchemaRegistry(log, subjects)         # log: shared.jetstream.Log, started
      schemas = await registry.schemas(store)          # loaded and watched from now on
      schemas.validate("OrderPlaced", data, version)   # raises InvalidRequestError naming the field
      rows = schemas.upcast(rows)                      # RecordedEvent dicts, updated in place
      await registry.stop()

  ``registry.loaded(store)`` is the non-blocking fast path (None until the first load is done
  or while a change is being read). A store's ``Schemas`` object is live: the registry replaces
  its types as the bucket changes, so ``schemas.upcast`` can be handed to code that wants a
  plain ``rows -> rows`` callable (the subscription service's drivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jsonschema._legacy_keywords
import jsonschema._utils
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from shared import patterns
from shared.errors import InvalidRequestError
from shared.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log, StoredMsg
from shared.models.schema import (
    AddStep,
    ConvertStep,
    CopyStep,
    JoinStep,
    MapStep,
    NestStep,
    RemoveStep,
    RenameStep,
    SchemaDef,
    SetStep,
    SplitStep,
    Step,
    UnnestStep,
    path_segments,
)
from shared.subjects import Subjects, kv_token

__all__ = [
    "Chain",
    "SchemaRegistry",
    "Schemas",
    "TypeSchemas",
    "check_chain",
    "check_json_schema",
    "compile_chain",
    "compile_step",
    "schema_version_of",
]

log = logging.getLogger(__name__)

Data = dict[str, Any]
StepFn = Callable[[Data], None]
Chain = Callable[[Data], Data]

_MISSING: Final = object()
H_KV_OP: Final = "KV-Operation"
MULTI_LAST_LIMIT: Final = 1024  # subjects per multi_last Direct Get the server answers
_INT_TEXT: Final = re.compile(r"\A-?[0-9]{1,18}\Z")
_NUMBER_TEXT: Final = re.compile(r"\A-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


# --- paths (copy on write) --------------------------------------------------------------------


def _get(d: Data, segs: tuple[str, ...]) -> Any:
    cur: Any = d
    for s in segs:
        if not isinstance(cur, dict):
            return _MISSING
        cur = cur.get(s, _MISSING)
        if cur is _MISSING:
            return _MISSING
    return cur


def _parent(d: Data, segs: tuple[str, ...], create: bool) -> Data | None:
    """The object that holds ``segs[-1]``, ready to be written: every nested object on the way
    is replaced by a copy (the caller owns ``d`` itself), missing ones are created when
    ``create``. None when the way is blocked by a value that is not an object."""
    cur = d
    for s in segs[:-1]:
        child = cur.get(s, _MISSING)
        if child is _MISSING:
            if not create:
                return None
            child = {}
        elif isinstance(child, dict):
            child = dict(child)
        else:
            return None
        cur[s] = child
        cur = child
    return cur


def _set(d: Data, segs: tuple[str, ...], value: Any) -> bool:
    parent = _parent(d, segs, True)
    if parent is None:
        return False
    parent[segs[-1]] = value
    return True


def _pop(d: Data, segs: tuple[str, ...]) -> Any:
    if _get(d, segs) is _MISSING:
        return _MISSING
    parent = _parent(d, segs, False)
    return _MISSING if parent is None else parent.pop(segs[-1], _MISSING)


@dataclass(frozen=True, slots=True)
class _Path:
    """A path compiled into its three accesses; one-key paths (the common case) are plain
    dict operations."""

    segs: tuple[str, ...]
    get: Callable[[Data], Any]
    set: Callable[[Data, Any], bool]
    pop: Callable[[Data], Any]


def _path(path: str | list[str] | tuple[str, ...]) -> _Path:
    segs = path if isinstance(path, tuple) else path_segments(path)
    if len(segs) == 1:
        key = segs[0]

        def set1(d: Data, value: Any) -> bool:
            d[key] = value
            return True

        return _Path(segs, lambda d: d.get(key, _MISSING), set1, lambda d: d.pop(key, _MISSING))
    return _Path(segs, lambda d: _get(d, segs), lambda d, v: _set(d, segs, v), lambda d: _pop(d, segs))


def _const(value: Any) -> Callable[[], Any]:
    """A constant from a schema: objects and lists are copied for every event that gets them."""
    if isinstance(value, dict | list):
        return lambda: copy.deepcopy(value)
    return lambda: value


# --- value rules ------------------------------------------------------------------------------


def _table_key(value: Any) -> str | None:
    """How ``map`` looks a value up: strings as they are, integers (and integral numbers) by their
    decimal text, true/false/null by those words; other values have no key."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def convert_value(value: Any, to: str) -> Any:
    """``convert``'s rules; returns ``_MISSING`` when the value stays as it is."""
    if to == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return _MISSING
    if to == "integer":
        if isinstance(value, bool):
            return _MISSING
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_TEXT.match(value):
            return int(value)
        return _MISSING
    if to == "number":
        if isinstance(value, bool):
            return _MISSING
        if isinstance(value, int | float):
            return value
        if isinstance(value, str) and len(value) <= 32 and _NUMBER_TEXT.match(value):
            return int(value) if _INT_TEXT.match(value) else float(value)
        return _MISSING
    # boolean
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    return _MISSING


# --- steps ------------------------------------------------------------------------------------


def compile_step(step: Step) -> StepFn:
    """One step as a function that updates an event's ``data`` (a dict the caller owns)."""
    if isinstance(step, RenameStep | CopyStep):
        src, dst = _path(step.from_), _path(step.to)
        src_get, src_pop, src_set, dst_set = src.get, src.pop, src.set, dst.set
        if isinstance(step, CopyStep):

            def copy_(d: Data) -> None:
                value = src_get(d)
                if value is not _MISSING:
                    dst_set(d, value)

            return copy_

        def move(d: Data) -> None:
            value = src_pop(d)
            if value is not _MISSING and not dst_set(d, value):
                src_set(d, value)  # the target is blocked: put it back

        return move
    if isinstance(step, AddStep | SetStep):
        target, make = _path(step.path), _const(step.value)
        get, put = target.get, target.set
        if isinstance(step, AddStep):

            def add(d: Data) -> None:
                if get(d) is _MISSING:
                    put(d, make())

            return add

        def set_(d: Data) -> None:
            put(d, make())

        return set_
    if isinstance(step, RemoveStep):
        pop = _path(step.path).pop

        def remove(d: Data) -> None:
            pop(d)

        return remove
    if isinstance(step, NestStep):
        fields = [_path(f) for f in step.fields]
        into = _path(step.into)
        moves = [(f.pop, _path((*into.segs, f.segs[-1])).set) for f in fields]

        def nest(d: Data) -> None:
            target = into.get(d)
            if target is _MISSING:
                if not into.set(d, {}):
                    return
            elif not isinstance(target, dict):
                return
            for pop_field, set_inner in moves:
                value = pop_field(d)
                if value is not _MISSING:
                    set_inner(d, value)

        return nest
    if isinstance(step, UnnestStep):
        segs, prefix = path_segments(step.path), step.prefix

        def unnest(d: Data) -> None:
            inner = _get(d, segs)
            if not isinstance(inner, dict):
                return
            parent = _parent(d, segs, False)
            if parent is None:
                return
            del parent[segs[-1]]
            for k, v in inner.items():
                parent[prefix + k] = v

        return unnest
    if isinstance(step, MapStep):
        target, table = _path(step.path), step.table
        default = _const(step.default) if "default" in step.model_fields_set else None
        get, put = target.get, target.set

        def map_(d: Data) -> None:
            value = get(d)
            if value is _MISSING:
                return
            key = value if value.__class__ is str else _table_key(value)
            if key is not None and key in table:
                new = table[key]
                put(d, copy.deepcopy(new) if isinstance(new, dict | list) else new)
            elif default is not None:
                put(d, default())

        return map_
    if isinstance(step, SplitStep):
        source, sep = _path(step.path), step.separator
        targets = [_path(p) for p in step.into]
        setters = [t.set for t in targets]
        n = len(targets)
        drop_source = source.pop if not step.keep and source.segs not in [t.segs for t in targets] else None
        get = source.get

        def split(d: Data) -> None:
            value = get(d)
            if value.__class__ is not str:
                return
            parts = value.split(sep, n - 1)
            if len(parts) < n:
                parts += [""] * (n - len(parts))
            if drop_source is not None:
                drop_source(d)
            for put, part in zip(setters, parts, strict=False):
                put(d, part)

        return split
    if isinstance(step, JoinStep):
        sources = [_path(f) for f in step.fields]
        joined, glue = _path(step.to), step.separator
        getters = [f.get for f in sources]
        drop_sources = [] if step.keep else [f.pop for f in sources if f.segs != joined.segs]

        def join(d: Data) -> None:
            values = []
            for get_field in getters:
                value = get_field(d)
                if value is _MISSING or value is None:
                    continue
                if value.__class__ is not str:
                    return
                values.append(value)
            if not values:
                return
            for pop_field in drop_sources:
                pop_field(d)
            joined.set(d, glue.join(values))

        return join
    if isinstance(step, ConvertStep):
        target, to = _path(step.path), step.to
        get, put = target.get, target.set

        def convert(d: Data) -> None:
            value = get(d)
            if value is _MISSING:
                return
            new = convert_value(value, to)
            if new is not _MISSING and new is not value:
                put(d, new)

        return convert
    raise TypeError(f"unknown step {step!r}")  # pragma: no cover - the models admit no other


def compile_chain(steps: Sequence[Step]) -> Chain:
    """Steps as one function: ``new_data = chain(data)``; ``data`` itself is never modified."""
    fns = [compile_step(s) for s in steps]

    def run(data: Data) -> Data:
        out = dict(data)
        for fn in fns:
            fn(out)
        return out

    return run


# --- schemas of one type ----------------------------------------------------------------------


def check_chain(versions: Mapping[int, SchemaDef]) -> None:
    """Every step from version 1 to the highest registered one must be defined by some registered
    version (the highest one that defines it wins). Raises InvalidRequestError naming the gap."""
    if not versions:
        return
    current = max(versions)
    for k in range(1, current):
        if not any(k in s.upcast_from for v, s in versions.items() if v > k):
            raise InvalidRequestError(
                f"the upcaster chain has a gap: nothing upcasts version {k} to {k + 1}",
                details={
                    "field": "schema.upcast_from",
                    "reason": f'no registered version of the type defines upcast_from["{k}"] (steps from '
                    f"version {k} to {k + 1}); add it, as an empty list when nothing changes",
                    "from_version": k,
                },
            )


def check_json_schema(schema: dict[str, Any] | bool | None) -> None:
    """Raises InvalidRequestError when ``schema`` is not a valid JSON Schema, or when one of its
    regular expressions (``pattern``, ``patternProperties``) is not one RE2 runs (shared/patterns.py)."""
    if schema is None:
        return
    cls = _validator_class(schema)
    try:
        # booleans are schemas too; jsonschema's protocol omits check_schema's format_checker
        cls.check_schema(schema, format_checker=_format_checker(cls))  # type: ignore[arg-type,call-arg]
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        field = "schema.json_schema" + (f".{path}" if path else "")
        details: dict[str, Any] = {"field": field, "reason": exc.message[:300]}
        if exc.validator == "format" and exc.validator_value == "regex" and isinstance(exc.instance, str):
            details["reason"] = (patterns.check_pattern(exc.instance) or exc.message)[:300]
        raise InvalidRequestError("schema.json_schema is not a valid JSON Schema", details=details) from None
    for where, pattern in _schema_patterns(schema, ()):
        reason = patterns.check_pattern(pattern)
        if reason is not None:
            path = ".".join(where)
            raise InvalidRequestError(
                "schema.json_schema has a pattern the gateway does not run (RE2 syntax)",
                details={"field": "schema.json_schema" + (f".{path}" if path else ""), "reason": reason[:300]},
            )


# keywords whose values are data, not schemas: a {"pattern": ...} inside them is not a pattern
_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})


def _schema_patterns(node: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], str]]:
    """Every regular expression of a schema: (path, pattern) of each ``pattern`` string and each
    key of a ``patternProperties`` object, at any depth."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _schema_patterns(item, (*path, str(i)))
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "pattern" and isinstance(value, str):
            yield (*path, key), value
        elif key == "patternProperties" and isinstance(value, dict):
            for pattern in value:
                yield (*path, key, str(pattern)), str(pattern)
        if key not in _DATA_KEYWORDS:
            yield from _schema_patterns(value, (*path, str(key)))


def uses_patterns(schema: Any) -> bool:
    """True when the schema has a regular expression (``pattern``/``patternProperties``)."""
    return next(iter(_schema_patterns(schema, ())), None) is not None


# --- JSON Schema with RE2 ---------------------------------------------------------------------
# jsonschema runs ``pattern`` and ``patternProperties`` (and ``additionalProperties``/
# ``unevaluatedProperties``, which look at ``patternProperties``) with Python's backtracking
# ``re``. The validators below run them with RE2 instead: the first three keywords are replaced
# through ``jsonschema.validators.extend``, and the helper jsonschema uses for
# ``unevaluatedProperties`` finds ``re.search`` in its module, which is pointed at RE2 here.


def _re2_pattern(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if validator.is_type(instance, "string") and not patterns.search(patrn, instance):
        shown = instance if len(instance) <= 100 else instance[:100] + "…"
        yield ValidationError(f"{shown!r} does not match {patrn!r}")


def _re2_pattern_properties(validator: Any, pp: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pp.items():
        for k, v in instance.items():
            if patterns.search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _re2_additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    pps = list(schema.get("patternProperties", {}))
    extras = [
        k for k in instance if k not in properties and not any(patterns.search(p, k) for p in pps)
    ]
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        names = ", ".join(repr(each) for each in sorted(extras, key=str)[:20])
        if pps:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{names} {verb} not match any of the regexes: {', '.join(map(repr, sorted(pps)))}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


class _Re2Search:
    """Stands in for the ``re`` module in jsonschema's helper modules: ``search`` runs RE2."""

    @staticmethod
    def search(pattern: str, string: str, flags: int = 0) -> bool:
        return patterns.search(pattern, string)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


for _module in (jsonschema._utils, jsonschema._legacy_keywords):
    if getattr(_module, "re", None) is not re:  # pragma: no cover - a jsonschema we do not know
        raise ImportError(f"{_module.__name__} no longer uses re; check shared/upcasting.py's RE2 patch")
    _module.re = _Re2Search()  # type: ignore[attr-defined]

_LINEAR: dict[type[Validator], type[Validator]] = {}
_FORMATS: dict[type[Validator], FormatChecker] = {}


def _linear(cls: type[Validator]) -> type[Validator]:
    """``cls`` with its regular expressions run by RE2."""
    out = _LINEAR.get(cls)
    if out is None:
        keywords: dict[str, Any] = {}
        for name, fn in (
            ("pattern", _re2_pattern),
            ("patternProperties", _re2_pattern_properties),
            ("additionalProperties", _re2_additional_properties),
        ):
            if name in cls.VALIDATORS:
                keywords[name] = fn
        out = _LINEAR[cls] = extend(cls, keywords)  # type: ignore[no-untyped-call]
    return out


def _is_re2(instance: object) -> bool:
    if isinstance(instance, str):
        patterns.compile_pattern(instance)
    return True


def _format_checker(cls: type[Validator]) -> FormatChecker:
    """The draft's format checker with ``regex`` checked by RE2 (for check_schema)."""
    fc = _FORMATS.get(cls)
    if fc is None:
        base = validator_for(cls.META_SCHEMA, default=cls).FORMAT_CHECKER
        fc = FormatChecker()
        fc.checkers = dict(base.checkers)
        fc.checkers["regex"] = (_is_re2, patterns.PatternError)
        _FORMATS[cls] = fc
    return fc


def _validator_class(schema: dict[str, Any] | bool) -> type[Validator]:
    """The validator of the draft ``$schema`` names (2020-12 when it names none), with RE2."""
    if isinstance(schema, dict) and "$schema" in schema:
        cls: type[Validator] | None = validator_for(schema, default=None)  # type: ignore[arg-type]
        if cls is None:
            raise InvalidRequestError(
                "schema.json_schema names an unknown $schema",
                details={
                    "field": "schema.json_schema.$schema",
                    "reason": f"unknown dialect {schema['$schema']!r}"[:300],
                },
            )
        return _linear(cls)
    return _linear(Draft202012Validator)


def schema_version_of(metadata: Any) -> int | None:
    """An event's schema version: ``metadata.schema_version``, 1 when absent; None when it is
    not a positive integer."""
    if not isinstance(metadata, dict):
        return 1
    v = metadata.get("schema_version", 1)
    if v.__class__ is not int or v < 1:
        return None
    return int(v)


def _error_field(err: ValidationError) -> str:
    parts = [str(p) for p in err.absolute_path]
    if err.validator == "required" and isinstance(err.instance, dict):
        required = err.validator_value if isinstance(err.validator_value, list) else []
        missing = [n for n in required if n not in err.instance]
        if missing:
            parts.append(str(missing[0]))
    elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        extra = [k for k in err.instance if k not in known]
        if extra:
            parts.append(str(extra[0]))
    return ".".join(parts)


@dataclass(slots=True)
class TypeSchemas:
    """The registered versions of one event type, with compiled chains and validators."""

    event_type: str
    versions: dict[int, SchemaDef]
    registered_at: dict[int, int] = field(default_factory=dict)
    current: int = 0
    _chains: dict[int, Chain] = field(default_factory=dict)
    _validators: dict[int, Validator | None] = field(default_factory=dict)
    has_patterns: bool = False  # some version's JSON Schema has a regular expression

    def __post_init__(self) -> None:
        self.current = max(self.versions) if self.versions else 0
        self.has_patterns = any(uses_patterns(s.json_schema) for s in self.versions.values())

    def steps(self, from_version: int) -> list[Step]:
        """The steps from ``from_version`` to the next version (see ``check_chain``)."""
        for v in sorted(self.versions, reverse=True):
            if v > from_version and from_version in self.versions[v].upcast_from:
                return list(self.versions[v].upcast_from[from_version])
        return []

    def chain(self, from_version: int) -> Chain:
        """The compiled chain from ``from_version`` to the current version (cached)."""
        fn = self._chains.get(from_version)
        if fn is None:
            steps: list[Step] = []
            for k in range(from_version, self.current):
                steps.extend(self.steps(k))
            fn = self._chains[from_version] = compile_chain(steps)
        return fn

    def validator(self, version: int) -> Validator | None:
        if version in self._validators:
            return self._validators[version]
        schema = self.versions.get(version)
        js = schema.json_schema if schema is not None else None
        v: Validator | None = None
        if js is not None:
            v = _validator_class(js)(js)
        self._validators[version] = v
        return v

    @classmethod
    def from_stored(cls, doc: Mapping[str, Any]) -> TypeSchemas:
        """From the bucket's JSON form: ``{"event_type", "versions": {"1": {...}, ...}}``."""
        versions: dict[int, SchemaDef] = {}
        registered: dict[int, int] = {}
        for key, raw in doc["versions"].items():
            body = {k: v for k, v in raw.items() if k != "registered_at"}
            versions[int(key)] = _SCHEMA.validate_python(body)
            registered[int(key)] = int(raw.get("registered_at", 0))
        return cls(str(doc["event_type"]), versions, registered)


_SCHEMA: Final = TypeAdapter(SchemaDef)


class Schemas:
    """The schemas of one store: ``validate`` data and ``upcast`` events."""

    __slots__ = ("types",)

    def __init__(self, types: dict[str, TypeSchemas] | None = None) -> None:
        self.types: dict[str, TypeSchemas] = types or {}

    def current_version(self, event_type: str) -> int | None:
        t = self.types.get(event_type)
        return t.current if t is not None else None

    def validate(
        self,
        event_type: str,
        data: Any,
        version: int = 1,
        *,
        field: str = "data",
        version_field: str = "metadata.schema_version",
    ) -> None:
        """Check ``data`` against the JSON Schema of ``event_type`` at ``version``, if it has one.
        Raises InvalidRequestError whose ``details.field`` is the path of the bad value
        (``field`` + ``.amount``); a version above the type's current one is refused too."""
        t = self.types.get(event_type)
        if t is None:
            return
        if version > t.current:
            raise InvalidRequestError(
                f"schema_version {version} of {event_type!r} is not registered (current is {t.current})",
                details={
                    "field": version_field,
                    "reason": "not registered",
                    "event_type": event_type,
                    "current_version": t.current,
                },
            )
        validator = t.validator(version)
        if validator is None:
            return
        try:
            errors = list(validator.iter_errors(data))
        except Exception as exc:  # e.g. a $ref that cannot be resolved: the schema's fault
            raise InvalidRequestError(
                f"the JSON Schema of {event_type!r} version {version} cannot be applied",
                details={"field": field, "reason": str(exc)[:300], "event_type": event_type, "schema_version": version},
            ) from None
        if not errors:
            return
        first = best_match(errors)
        path = _error_field(first)
        listed = [
            {"field": f"{field}.{p}" if (p := _error_field(e)) else field, "reason": e.message[:200]}
            for e in errors[:10]
        ]
        raise InvalidRequestError(
            f"data does not match the schema of {event_type!r} version {version}: {first.message[:150]}",
            details={
                "field": f"{field}.{path}" if path else field,
                "reason": first.message[:300],
                "event_type": event_type,
                "schema_version": version,
                "errors": listed,
            },
        )

    def matches_patterns(self, events: Iterable[Any]) -> bool:
        """True when validating these events runs regular expressions: the caller then runs
        ``check_append`` off the event loop (``shared.patterns.run_matching``)."""
        types = self.types
        if not types:
            return False
        return any((t := types.get(ev.event_type)) is not None and t.has_patterns for ev in events)

    def check_append(self, events: Iterable[Any]) -> None:
        """Validate each event of an append (``EventIn``-like: ``event_type``, ``data``,
        ``metadata``); a dict lookup per event when its type has no schema."""
        types = self.types
        if not types:
            return
        for i, ev in enumerate(events):
            if ev.event_type not in types:
                continue
            version = schema_version_of(ev.metadata)
            if version is None:
                raise InvalidRequestError(
                    "metadata.schema_version must be a positive integer",
                    details={"field": f"events.{i}.metadata.schema_version", "reason": "not a positive integer"},
                )
            self.validate(
                ev.event_type,
                ev.data,
                version,
                field=f"events.{i}.data",
                version_field=f"events.{i}.metadata.schema_version",
            )

    def upcast(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bring every event of a known type to its current version: ``data`` through the chain,
        ``metadata.schema_version`` set. Events of types without a schema, already current, from
        a newer version, or whose data is not an object, are left as they are. ``rows`` are
        updated in place (their ``data``/``metadata`` replaced, never modified) and returned."""
        types = self.types
        if not types:
            return rows
        for row in rows:
            t = types.get(row["event_type"])
            if t is None:
                continue
            md = row.get("metadata")
            v = md.get("schema_version", 1) if md else 1
            if v.__class__ is not int or v >= t.current or v < 1:
                continue
            data = row.get("data")
            if data.__class__ is not dict:
                continue
            chain = t._chains.get(v) or t.chain(v)
            try:
                row["data"] = chain(data)
            except Exception:  # steps are total; this is a bug, and a read must not fail on it
                log.exception("upcasting %s from version %d failed", row["event_type"], v)
                continue
            row["metadata"] = {**md, "schema_version": t.current} if md else {"schema_version": t.current}
        return rows


# --- the registry -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    """One store's schemas and the subscription that keeps them current."""

    bucket: str
    schemas: Schemas = field(default_factory=Schemas)
    keys: dict[str, str] = field(default_factory=dict)  # KV key -> event type
    seqs: dict[str, int] = field(default_factory=dict)  # KV key -> sequence of the applied value
    sub: Subscription | None = None
    dirty: set[str] = field(default_factory=set)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    synced_seq: int = -1  # the bucket's last sequence when it was last read whole
    used: float = 0.0  # loop time of the last use: idle watches are dropped (ADR 0016)


class SchemaRegistry:
    """Schemas of every store this process serves, loaded on first use and watched.

    Changes reach the registry through a core subscription to the bucket's subjects
    (``$KV.<bucket>.>``): each message (put, delete, or a refused compare-and-set) marks its key,
    and the key is read again from the stream leader, so the registry holds what the bucket holds.
    ``schemas(store)`` waits for marked keys to be read, so a request that follows a change on
    the same server sees it. A periodic check of the bucket's last sequence (``resync_s``) reloads
    a store whose notifications were missed (e.g. while the connection was down)."""

    def __init__(
        self,
        log: Log,
        subjects: Subjects,
        *,
        resync_s: float = 30.0,
        settle_timeout_s: float = 2.0,
        idle_evict_s: float = 300.0,
    ) -> None:
        self.log = log
        self.subjects = subjects
        self.resync_s = resync_s
        self.settle_timeout_s = settle_timeout_s
        # a store's watch (a core subscription and its schemas) unused this long is dropped, so
        # requests naming ever new stores cannot grow the registry without bound (ADR 0016)
        self.idle_evict_s = idle_evict_s
        self._watches: dict[str, _Watch] = {}
        self._opening: dict[str, asyncio.Future[_Watch]] = {}
        self._resync: asyncio.Task[None] | None = None
        self._stopped = False

    # --- the API --------------------------------------------------------------------------------
    def loaded(self, store: str) -> Schemas | None:
        """The store's schemas when they are loaded and no change is pending; else None (then
        call ``schemas``). The read path's fast check."""
        w = self._watches.get(store)
        if w is None or not w.settled.is_set():
            return None
        w.used = asyncio.get_running_loop().time()
        return w.schemas

    async def schemas(self, store: str) -> Schemas:
        """The store's schemas, loading and watching them on first use and waiting (up to
        ``settle_timeout_s``) for changes already announced to be read."""
        w = self._watches.get(store)
        if w is None:
            w = await self._open(store)
        w.used = asyncio.get_running_loop().time()
        if not w.settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.settled.wait(), self.settle_timeout_s)
        return w.schemas

    async def upcast(self, store: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        schemas = self.loaded(store) or await self.schemas(store)
        return schemas.upcast(rows)

    async def refresh(self, store: str, event_type: str) -> None:
        """Read one type again now (the schema service calls it after writing it)."""
        w = self._watches.get(store)
        if w is None:
            await self._open(store)
            return
        await self._reload_key(w, kv_token(event_type))

    async def stop(self) -> None:
        self._stopped = True
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync
        for w in self._watches.values():
            if w.worker is not None:
                w.worker.cancel()
            if w.sub is not None:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
        self._watches.clear()

    def watched(self) -> int:
        """How many stores' schemas are held (and watched) now."""
        return len(self._watches)

    async def evict_idle(self) -> int:
        """Drop the watches not used for ``idle_evict_s``; returns how many. A dropped store is
        loaded again on its next use."""
        cutoff = asyncio.get_running_loop().time() - self.idle_evict_s
        idle = [(store, w) for store, w in self._watches.items() if w.used <= cutoff]
        for store, w in idle:
            if self._watches.get(store) is w:
                del self._watches[store]
            if w.worker is not None:
                w.worker.cancel()
            if w.sub is not None:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
        return len(idle)

    # --- loading ------------------------------------------------------------------------------
    async def _open(self, store: str) -> _Watch:
        pending = self._opening.get(store)
        if pending is not None:
            return await asyncio.shield(pending)
        await self.evict_idle()
        fut: asyncio.Future[_Watch] = asyncio.get_running_loop().create_future()
        self._opening[store] = fut
        try:
            w = _Watch(self.subjects.schema_bucket(store))
            # subscribe first, then read: a change made while reading is announced, not lost

            async def on_change(msg: Msg) -> None:
                self._on_change(w, msg)

            w.sub = await self.log.nc.subscribe(self.subjects.kv_subject(w.bucket, ">"), cb=on_change)
            try:
                await self._load(w)
            except BaseException:
                with contextlib.suppress(Exception):
                    await w.sub.unsubscribe()
                raise
            w.settled.set()
            w.used = asyncio.get_running_loop().time()
            self._watches[store] = w
            if self._resync is None and self.resync_s > 0:
                self._resync = asyncio.create_task(self._resync_loop())
            fut.set_result(w)
            return w
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: concurrent openers re-raise it themselves
            raise
        finally:
            self._opening.pop(store, None)

    async def _info(self, w: _Watch, subjects: bool = False, offset: int = 0) -> dict[str, Any] | None:
        body: dict[str, Any] = {"subjects_filter": self.subjects.kv_subject(w.bucket, ">"), "offset": offset}
        try:
            return await self.log.api(
                f"$JS.API.STREAM.INFO.{self.subjects.kv_stream(w.bucket)}", body if subjects else None
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise

    async def _load(self, w: _Watch) -> None:
        """Read the whole bucket: its subjects (one STREAM.INFO per 100 000), then the last value
        of each in batched Direct Gets."""
        subjects: list[str] = []
        offset = 0
        seq = 0
        while True:
            si = await self._info(w, subjects=True, offset=offset)
            if si is None:
                break
            state = si.get("state", {})
            if offset == 0:
                seq = int(state.get("last_seq", 0))
            page = list(state.get("subjects") or {})
            subjects.extend(page)
            offset += len(page)
            if not page or offset >= int(si.get("total", len(page))):
                break
        types: dict[str, TypeSchemas] = {}
        keys: dict[str, str] = {}
        seqs: dict[str, int] = {}
        prefix = len(self.subjects.kv_subject(w.bucket, ""))
        name = self.subjects.kv_stream(w.bucket)
        for i in range(0, len(subjects), MULTI_LAST_LIMIT):
            group = subjects[i : i + MULTI_LAST_LIMIT]
            msgs, _ = await self.log.direct_batch(name, {"multi_last": group, "batch": len(group)})
            for sm in msgs:
                key = sm.subject[prefix:]
                t = self._decode(w, sm)
                seqs[key] = sm.seq
                if t is not None:
                    types[t.event_type] = t
                    keys[key] = t.event_type
        w.schemas.types = types
        w.keys = keys
        w.seqs = seqs
        w.synced_seq = seq

    def _decode(self, w: _Watch, sm: StoredMsg) -> TypeSchemas | None:
        if sm.headers.get(H_KV_OP) in ("DEL", "PURGE") or not sm.data:
            return None
        try:
            return TypeSchemas.from_stored(json.loads(sm.data))
        except (ValueError, KeyError, TypeError, PydanticValidationError):
            log.warning("ignoring a malformed schema in %s at %s", w.bucket, sm.subject)
            return None

    def _apply(self, w: _Watch, key: str, sm: StoredMsg | None) -> None:
        if sm is not None:
            if sm.seq < w.seqs.get(key, 0):
                return  # older than what we hold
            w.seqs[key] = sm.seq
        t = self._decode(w, sm) if sm is not None else None
        types = dict(w.schemas.types)  # readers keep the dict they took
        old = w.keys.pop(key, None)
        if old is not None:
            types.pop(old, None)
        if t is not None:
            types[t.event_type] = t
            w.keys[key] = t.event_type
        w.schemas.types = types

    async def _reload_key(self, w: _Watch, key: str) -> None:
        try:
            sm = await self.log.leader_get(
                self.subjects.kv_stream(w.bucket), {"last_by_subj": self.subjects.kv_subject(w.bucket, key)}
            )
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            sm = None
        self._apply(w, key, sm)

    # --- watching -----------------------------------------------------------------------------
    def _on_change(self, w: _Watch, msg: Msg) -> None:
        key = msg.subject[len(self.subjects.kv_subject(w.bucket, "")) :]
        w.dirty.add(key)
        w.settled.clear()
        if w.worker is None or w.worker.done():
            w.worker = asyncio.create_task(self._drain(w))

    async def _drain(self, w: _Watch) -> None:
        try:
            while w.dirty:
                key = w.dirty.pop()
                try:
                    await self._reload_key(w, key)
                except Exception as exc:
                    log.warning("could not read schema %s of %s: %s; the next resync will", key, w.bucket, exc)
                    w.synced_seq = -1  # force a full reload at the next resync
        finally:
            # never leave readers waiting: on cancellation the resync catches up
            w.settled.set()

    async def _resync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stopped:
            await asyncio.sleep(min(self.resync_s, self.idle_evict_s))
            with contextlib.suppress(Exception):
                await self.evict_idle()
            if loop.time() - last < self.resync_s:
                continue
            last = loop.time()
            for store, w in list(self._watches.items()):
                try:
                    si = await self._info(w)
                    seq = int(si.get("state", {}).get("last_seq", 0)) if si else 0
                    if seq != w.synced_seq:
                        await self._load(w)
                except Exception as exc:
                    log.warning("schema resync of store %s failed: %s", store, exc)
