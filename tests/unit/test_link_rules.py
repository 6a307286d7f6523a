"""Link filters and transforms (services/link/rules.py): every op, field paths, and/or groups,
missing fields and mixed types; transforms never touch their input. No network."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from esdb_gater.services.causation.handlers import to_dot
from esdb_gater.services.link.driver import derived_event_id
from esdb_gater.services.link.rules import compile_filter, compile_transform, pattern_regex
from esdb_gater.shared.models.link import CreateLinkRequest

EV: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "OrderPlaced",
    "stream_id": "orders-7",
    "version": 3,
    "tags": ["vip", "eu"],
    "data": {"amount": 150, "currency": "EUR", "customer": {"name": "Ada", "tier": 2}, "items": ["a", "b"]},
    "metadata": {"source": "web", "schema_version": 1},
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"field": "data.amount", "op": "=", "value": 150}, True),
        ({"field": "data.amount", "op": "=", "value": 150.0}, True),
        ({"field": "data.amount", "op": "=", "value": "150"}, False),
        ({"field": "data.amount", "op": "!=", "value": 150}, False),
        ({"field": "data.missing", "op": "!=", "value": 1}, True),
        ({"field": "data.missing", "op": "=", "value": None}, False),
        ({"field": "data.amount", "op": ">", "value": 100}, True),
        ({"field": "data.amount", "op": ">", "value": 150}, False),
        ({"field": "data.amount", "op": ">=", "value": 150}, True),
        ({"field": "data.amount", "op": "<", "value": 150}, False),
        ({"field": "data.amount", "op": "<=", "value": 150}, True),
        ({"field": "data.currency", "op": ">", "value": 100}, False),  # string vs number: no match
        ({"field": "data.currency", "op": "<", "value": "USD"}, True),
        ({"field": "data.currency", "op": "in", "value": ["EUR", "GBP"]}, True),
        ({"field": "data.currency", "op": "in", "value": []}, False),
        ({"field": "tags", "op": "contains", "value": "vip"}, True),
        ({"field": "tags", "op": "contains", "value": "us"}, False),
        ({"field": "data.currency", "op": "contains", "value": "UR"}, True),
        ({"field": "data.customer", "op": "contains", "value": {"tier": 2}}, True),
        ({"field": "data.customer", "op": "contains", "value": {"tier": 3}}, False),
        ({"field": "data.customer.name", "op": "matches", "value": "^A.a$"}, True),
        ({"field": "data.amount", "op": "matches", "value": "1"}, False),  # not a string
        ({"field": "event_type", "op": "=", "value": "OrderPlaced"}, True),
        ({"field": "stream_id", "op": "matches", "value": "^orders-"}, True),
        ({"field": "version", "op": ">=", "value": 3}, True),
        ({"field": "metadata.source", "op": "=", "value": "web"}, True),
        ({"field": "data.items.1", "op": "=", "value": "b"}, True),
        ({"field": "data.items.5", "op": "=", "value": "b"}, False),
        (
            {
                "type": "and",
                "filters": [
                    {"field": "data.amount", "op": ">", "value": 100},
                    {
                        "type": "or",
                        "filters": [
                            {"field": "tags", "op": "contains", "value": "x"},
                            {"field": "data.currency", "op": "=", "value": "EUR"},
                        ],
                    },
                ],
            },
            True,
        ),
        (
            {
                "type": "and",
                "filters": [
                    {"field": "data.amount", "op": ">", "value": 100},
                    {"field": "data.currency", "op": "=", "value": "USD"},
                ],
            },
            False,
        ),
        (
            {
                "type": "or",
                "filters": [
                    {"field": "data.amount", "op": "<", "value": 100},
                    {"field": "data.currency", "op": "=", "value": "USD"},
                ],
            },
            False,
        ),
        (None, True),
    ],
)
def test_filter(flt: dict[str, Any] | None, expected: bool) -> None:
    assert compile_filter(flt)(EV) is expected


def test_booleans_are_not_numbers() -> None:
    ev = {**EV, "data": {"flag": True, "n": 1}}
    assert compile_filter({"field": "data.flag", "op": "=", "value": True})(ev)
    assert not compile_filter({"field": "data.flag", "op": "=", "value": 1})(ev)
    assert not compile_filter({"field": "data.n", "op": "=", "value": True})(ev)
    assert not compile_filter({"field": "data.flag", "op": ">", "value": 0})(ev)


def test_binary_data_never_matches_a_data_path() -> None:
    ev = {**EV, "data": b"\x00\x01"}
    assert not compile_filter({"field": "data.amount", "op": "=", "value": 1})(ev)


def test_transform_renames_removes_adds_in_that_order_and_copies() -> None:
    before = copy.deepcopy(EV["data"])
    fn = compile_transform(
        {
            "rename_fields": {"amount": "total", "customer.name": "customer.full_name"},
            "remove_fields": ["items", "nope.deeper"],
            "add_fields": {"source": "link", "meta.origin": {"k": [1]}, "total": 1},
        }
    )
    out = fn(EV["data"])
    assert out == {
        "total": 1,
        "currency": "EUR",
        "customer": {"full_name": "Ada", "tier": 2},
        "source": "link",
        "meta": {"origin": {"k": [1]}},
    }
    assert EV["data"] == before  # the input is untouched
    assert fn("not an object") == "not an object"
    assert fn(None) is None
    assert compile_transform(None)(EV["data"]) is EV["data"]


def test_pattern_is_anchored_and_literal() -> None:
    rx = pattern_regex("orders-*")
    assert rx.fullmatch("orders-1") and rx.fullmatch("orders-")
    assert not rx.fullmatch("x-orders-1")
    assert pattern_regex("a.b*").fullmatch("a.bc") and not pattern_regex("a.b*").fullmatch("axbc")
    assert pattern_regex("*-archive").fullmatch("x-y-archive")


def test_derived_event_ids_are_stable_and_per_link() -> None:
    assert derived_event_id("a", "e-1") == derived_event_id("a", "e-1")
    assert derived_event_id("a", "e-1") != derived_event_id("b", "e-1")
    assert derived_event_id("a", "e-1") != derived_event_id("a", "e-2")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "x", "source": {"type": "nope"}}, "source"),
        ({"name": "x", "source": {"type": "stream"}}, "source.stream.stream_id"),
        ({"name": "x", "source": {"type": "stream_pattern", "pattern": ""}}, "source.stream_pattern.pattern"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "foo", "op": "=", "value": 1}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "data.a", "op": "~", "value": 1}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "tags.a", "op": "=", "value": 1}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "data.a", "op": "in", "value": 1}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"field": "data.a", "op": ">", "value": [1]}}, "filter"),
        (
            {"name": "x", "source": {"type": "all"}, "filter": {"field": "data.a", "op": "matches", "value": "("}},
            "filter",
        ),
        ({"name": "x", "source": {"type": "all"}, "filter": {"type": "xor", "filters": []}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "filter": {"type": "and", "filters": []}}, "filter"),
        ({"name": "x", "source": {"type": "all"}, "transform": {"add_fields": {"": 1}}}, "transform"),
        ({"name": "x", "source": {"type": "all"}, "transform": {"rename_fields": {"a": "b.."}}}, "transform"),
        ({"name": "x", "source": {"type": "all"}, "transform": {"drop": ["a"]}}, "transform"),
        ({"name": "", "source": {"type": "all"}}, "name"),
        ({"name": "a\nb", "source": {"type": "all"}}, "name"),
        ({"name": "x" * 201, "source": {"type": "all"}}, "name"),
        ({"name": "x", "source": {"type": "all"}, "backfill": "maybe"}, "backfill"),
    ],
)
def test_invalid_specs_name_the_part(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CreateLinkRequest.model_validate(spec)
    locs = [".".join(str(p) for p in e["loc"]) for e in exc.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs


def test_too_deep_a_filter_is_refused() -> None:
    flt: dict[str, Any] = {"field": "data.a", "op": "=", "value": 1}
    for _ in range(9):
        flt = {"type": "and", "filters": [flt]}
    with pytest.raises(ValidationError):
        CreateLinkRequest.model_validate({"name": "x", "source": {"type": "all"}, "filter": flt})


def test_dot_escapes_ids_and_labels() -> None:
    nodes = [
        {"event_id": 'a"b', "event_type": "T\\1"},
        {"event_id": "0123456789abcdef", "event_type": "U"},
    ]
    dot = to_dot(nodes, [('a"b', "0123456789abcdef")])
    assert dot.startswith("digraph causation {\n")
    assert '"a\\"b" [label="T\\\\1\\na\\"b"];' in dot
    assert '"0123456789abcdef" [label="U\\n01234567..."];' in dot
    assert '"a\\"b" -> "0123456789abcdef";' in dot
    assert dot.rstrip().endswith("}")
