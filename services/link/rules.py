"""A link's filter and transform, compiled from their declarative form into plain functions.

No I/O here. Filters never raise: a missing field, a value of the wrong type or an unordered
comparison simply does not match (``!=`` matches when the field is missing). Transforms never
raise either: they apply to ``data`` when it is an object and leave anything else as it is,
and they never modify the event they are given (copy on write).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

from esdb_gater.shared.core.patterns import glob, matcher
from esdb_gater.shared.models.link import FieldFilter, GroupFilter, Transform

__all__ = ["MISSING", "compile_filter", "compile_transform", "pattern_regex", "resolve", "uses_matches"]

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def pattern_regex(pattern: str) -> Any:
    """``*`` = any run of characters (also none); every other character is literal; anchored
    (an RE2 regex: use ``fullmatch``; linear time, shared/core/patterns.py)."""
    return glob(pattern)


def resolve(ev: Event, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in the event (``("data", "a", "b")``), or MISSING."""
    cur: Any = ev.get(path[0], MISSING)
    for seg in path[1:]:
        if isinstance(cur, dict):
            cur = cur.get(seg, MISSING)
        elif isinstance(cur, list) and seg.isdigit():
            i = int(seg)
            cur = cur[i] if i < len(cur) else MISSING
        else:
            return MISSING
    if cur is None and path[0] in ("tags",):
        return MISSING
    return cur


def _eq(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers (``true != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _ordered(a: Any, b: Any) -> bool:
    """Both numbers (not booleans) or both strings."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    num = (int, float)
    return (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))


def _contains(container: Any, value: Any) -> bool:
    """Strings: substring. Lists: an element equal to ``value``. Objects: ``value`` is an object
    whose keys and values are contained recursively (a subset)."""
    if isinstance(container, str):
        return isinstance(value, str) and value in container
    if isinstance(container, list):
        return any(_eq(x, value) for x in container)
    if isinstance(container, dict):
        return isinstance(value, dict) and all(k in container and _subset(container[k], v) for k, v in value.items())
    return False


def _subset(data: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(data, dict) and all(k in data and _subset(data[k], v) for k, v in pattern.items())
    return _eq(data, pattern)


def _leaf(f: FieldFilter) -> Predicate:
    path = tuple(f.field.split("."))
    value = f.value
    op = f.op
    if op == "=":
        return lambda ev: _eq(resolve(ev, path), value)
    if op == "!=":
        return lambda ev: not _eq(resolve(ev, path), value)
    if op == "in":
        choices = list(value)
        return lambda ev: any(_eq(resolve(ev, path), c) for c in choices)
    if op == "contains":
        return lambda ev: _contains(resolve(ev, path), value)
    if op == "matches":
        found = matcher(value)  # RE2 (linear time); PatternError for one the model let through

        def matches(ev: Event) -> bool:
            v = resolve(ev, path)
            return isinstance(v, str) and found(v)

        return matches
    compare: dict[str, Callable[[Any, Any], bool]] = {
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    cmp = compare[op]

    def ordered(ev: Event) -> bool:
        v = resolve(ev, path)
        return _ordered(v, value) and cmp(v, value)

    return ordered


def uses_matches(f: Any) -> bool:
    """True when the filter has a ``matches`` leaf (the driver then filters off the event loop)."""
    if isinstance(f, FieldFilter):
        return f.op == "matches"
    if isinstance(f, GroupFilter):
        return any(uses_matches(sub) for sub in f.filters)
    if isinstance(f, dict):
        if "filters" in f:
            return any(uses_matches(sub) for sub in f.get("filters") or [])
        return f.get("op") == "matches"
    return False


def compile_filter(f: FieldFilter | GroupFilter | dict[str, Any] | None) -> Predicate:
    """A predicate over RecordedEvent dicts; None matches everything."""
    if f is None:
        return lambda ev: True
    if isinstance(f, dict):
        f = GroupFilter.model_validate(f) if ("filters" in f or "type" in f) else FieldFilter.model_validate(f)
    if isinstance(f, FieldFilter):
        return _leaf(f)
    parts = [compile_filter(sub) for sub in f.filters]
    if f.type == "and":
        return lambda ev: all(p(ev) for p in parts)
    return lambda ev: any(p(ev) for p in parts)


# --- transform -------------------------------------------------------------------------------


def _pop(d: dict[str, Any], path: list[str]) -> Any:
    cur: Any = d
    for seg in path[:-1]:
        nxt = cur.get(seg) if isinstance(cur, dict) else None
        if not isinstance(nxt, dict):
            return MISSING
        nxt = dict(nxt)  # copy on write
        cur[seg] = nxt
        cur = nxt
    if not isinstance(cur, dict) or path[-1] not in cur:
        return MISSING
    return cur.pop(path[-1])


def _set(d: dict[str, Any], path: list[str], value: Any) -> None:
    cur = d
    for seg in path[:-1]:
        nxt = cur.get(seg)
        nxt = dict(nxt) if isinstance(nxt, dict) else {}
        cur[seg] = nxt
        cur = nxt
    cur[path[-1]] = value


def compile_transform(t: Transform | dict[str, Any] | None) -> Callable[[Any], Any]:
    """A function from ``data`` to the transformed ``data`` (a new object; the input is kept)."""
    if t is None:
        return lambda data: data
    if isinstance(t, dict):
        t = Transform.model_validate(t)
    renames = [(old.split("."), new.split(".")) for old, new in t.rename_fields.items()]
    removes = [p.split(".") for p in t.remove_fields]
    adds = [(p.split("."), v) for p, v in t.add_fields.items()]
    if not (renames or removes or adds):
        return lambda data: data

    def apply(data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for old, new in renames:
            value = _pop(out, old)
            if value is not MISSING:
                _set(out, new, value)
        for path in removes:
            _pop(out, path)
        for path, value in adds:
            _set(out, path, copy.deepcopy(value))
        return out

    return apply
