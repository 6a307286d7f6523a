"""Upcasting steps, chains and JSON Schema validation (SPEC.md §6): pure, no I/O.

A step is a JSON object such as
  ``{"op": "rename", "from": "customer", "to": "customer_id"}`` (the catalogue:
  ``shared/models/schema.py`` and docs/api/schema.md#steps). ``compile_step`` turns one into a
  function over an event's ``data``; ``TypeSchemas`` resolves, per event type, the steps from
  every version to the current one and caches one compiled chain per (type, from_version).
  Steps never fail: a step whose field is absent or has the wrong type does nothing, so a read
  never fails because of an old event. Steps never modify the objects they are given (nested
  objects are copied before they are written: copy on write).

The registry that loads them from KV and keeps them current is ``registry.py``.
"""

from __future__ import annotations

import copy
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
from pydantic import TypeAdapter

from esdb_gater.shared.core import patterns
from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.models.schema import (
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

__all__ = [
    "Chain",
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
    regular expressions (``pattern``, ``patternProperties``) is not one RE2 runs (shared/core/patterns.py)."""
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
    extras = [k for k in instance if k not in properties and not any(patterns.search(p, k) for p in pps)]
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
        raise ImportError(f"{_module.__name__} no longer uses re; check shared/upcasting/registry.py's RE2 patch")
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
        ``check_append`` off the event loop (``esdb_gater.shared.core.patterns.run_matching``)."""
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
