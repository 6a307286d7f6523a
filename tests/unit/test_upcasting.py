"""The declarative upcaster steps, chains, chain validation and JSON Schema validation
(shared/upcasting/registry.py), without a server. Each step's documented rules (docs/api/schema.md#steps)
are checked one by one, including the cases where a step must do nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.core.subjects import kv_token
from esdb_gater.shared.models.schema import RegisterSchemaRequest, SchemaDef, Step
from esdb_gater.shared.upcasting.steps import (  # UPCAST-FIX
    Schemas,
    TypeSchemas,
    check_chain,
    check_json_schema,
    compile_chain,
    compile_step,
    convert_value,
)

STEP: TypeAdapter[Step] = TypeAdapter(Step)


def run(step: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Apply one step to a copy and check the input was not modified."""
    before = copy.deepcopy(data)
    out = compile_chain([STEP.validate_python(step)])(data)
    assert data == before, "a step modified its input"
    return out


# --- steps ------------------------------------------------------------------------------------


def test_rename_top_level() -> None:
    assert run({"op": "rename", "from": "amt", "to": "amount"}, {"amt": 5, "x": 1}) == {"amount": 5, "x": 1}


def test_rename_moves_into_and_out_of_nested_objects() -> None:
    step_in = {"op": "rename", "from": "city", "to": "address.city"}
    assert run(step_in, {"city": "Oslo", "address": {"zip": "0150"}}) == {"address": {"zip": "0150", "city": "Oslo"}}
    assert run(step_in, {"city": "Oslo"}) == {"address": {"city": "Oslo"}}
    step_out = {"op": "rename", "from": "address.city", "to": "city"}
    assert run(step_out, {"address": {"city": "Oslo", "zip": "1"}}) == {"address": {"zip": "1"}, "city": "Oslo"}


def test_rename_of_an_absent_field_does_nothing() -> None:
    assert run({"op": "rename", "from": "nope", "to": "x"}, {"a": 1}) == {"a": 1}


def test_rename_into_a_blocked_path_keeps_the_value() -> None:
    # "address" is a string, so "address.city" cannot be written: the value stays where it was
    assert run({"op": "rename", "from": "city", "to": "address.city"}, {"city": "Oslo", "address": "x"}) == {
        "city": "Oslo",
        "address": "x",
    }


def test_rename_can_wrap_a_value_under_its_own_name() -> None:
    assert run({"op": "rename", "from": "price", "to": "price.amount"}, {"price": 5}) == {"price": {"amount": 5}}


def test_path_as_a_list_reaches_keys_with_dots() -> None:
    assert run({"op": "rename", "from": ["a.b"], "to": ["a", "b"]}, {"a.b": 1}) == {"a": {"b": 1}}


def test_copy_keeps_the_source() -> None:
    assert run({"op": "copy", "from": "a.b", "to": "c"}, {"a": {"b": 1}}) == {"a": {"b": 1}, "c": 1}
    assert run({"op": "copy", "from": "zz", "to": "c"}, {"a": 1}) == {"a": 1}


def test_add_sets_only_absent_fields() -> None:
    step = {"op": "add", "path": "currency", "value": "EUR"}
    assert run(step, {"amount": 1}) == {"amount": 1, "currency": "EUR"}
    assert run(step, {"currency": "NOK"}) == {"currency": "NOK"}
    assert run({"op": "add", "path": "note", "value": None}, {}) == {"note": None}
    assert run({"op": "add", "path": "meta.source", "value": "v1"}, {}) == {"meta": {"source": "v1"}}


def test_set_overwrites() -> None:
    step = {"op": "set", "path": "source", "value": "legacy"}
    assert run(step, {"source": "web"}) == {"source": "legacy"}
    assert run(step, {}) == {"source": "legacy"}


def test_constants_are_not_shared_between_events() -> None:
    chain = compile_chain([STEP.validate_python({"op": "add", "path": "tags", "value": ["a"]})])
    first, second = chain({}), chain({})
    first["tags"].append("b")
    assert second["tags"] == ["a"]


def test_remove() -> None:
    assert run({"op": "remove", "path": "a.b"}, {"a": {"b": 1, "c": 2}}) == {"a": {"c": 2}}
    assert run({"op": "remove", "path": "missing"}, {"a": 1}) == {"a": 1}
    assert run({"op": "remove", "path": "a.b"}, {"a": 5}) == {"a": 5}


def test_nest_moves_fields_into_an_object() -> None:
    step = {"op": "nest", "fields": ["street", "city", "absent"], "into": "address"}
    assert run(step, {"street": "Main 1", "city": "Oslo", "name": "x"}) == {
        "name": "x",
        "address": {"street": "Main 1", "city": "Oslo"},
    }
    assert run(step, {"address": {"zip": "1"}, "city": "Oslo"}) == {"address": {"zip": "1", "city": "Oslo"}}
    assert run(step, {"address": "flat", "city": "Oslo"}) == {"address": "flat", "city": "Oslo"}


def test_unnest_moves_fields_out_with_a_prefix() -> None:
    step = {"op": "unnest", "path": "address", "prefix": "address_"}
    assert run(step, {"address": {"city": "Oslo", "zip": "1"}, "n": 1}) == {
        "n": 1,
        "address_city": "Oslo",
        "address_zip": "1",
    }
    assert run({"op": "unnest", "path": "address"}, {"address": {"city": "Oslo"}}) == {"city": "Oslo"}
    assert run({"op": "unnest", "path": "address"}, {"address": "Oslo"}) == {"address": "Oslo"}


def test_map_through_a_table() -> None:
    table = {"A": "active", "C": "closed", "1": "one", "true": "yes", "null": "none"}
    step = {"op": "map", "path": "status", "table": table}
    assert run(step, {"status": "A"}) == {"status": "active"}
    assert run(step, {"status": 1}) == {"status": "one"}
    assert run(step, {"status": 1.0}) == {"status": "one"}
    assert run(step, {"status": True}) == {"status": "yes"}
    assert run(step, {"status": None}) == {"status": "none"}
    assert run(step, {"status": "Z"}) == {"status": "Z"}  # not in the table, no default: stays
    assert run(step, {"other": 1}) == {"other": 1}
    with_default = {**step, "default": "unknown"}
    assert run(with_default, {"status": "Z"}) == {"status": "unknown"}
    assert run(with_default, {"status": 1.5}) == {"status": "unknown"}
    assert run({**step, "default": None}, {"status": "Z"}) == {"status": None}


def test_split_a_string() -> None:
    step = {"op": "split", "path": "name", "separator": " ", "into": ["first", "last"]}
    assert run(step, {"name": "Ada King Lovelace"}) == {"first": "Ada", "last": "King Lovelace"}
    assert run(step, {"name": "Ada"}) == {"first": "Ada", "last": ""}
    assert run({**step, "keep": True}, {"name": "A B"}) == {"name": "A B", "first": "A", "last": "B"}
    assert run(step, {"name": 5}) == {"name": 5}
    into_self = {"op": "split", "path": "name", "separator": ",", "into": ["name", "rest"]}
    assert run(into_self, {"name": "a,b,c"}) == {"name": "a", "rest": "b,c"}


def test_join_strings() -> None:
    step = {"op": "join", "fields": ["first", "middle", "last"], "separator": " ", "to": "name"}
    assert run(step, {"first": "Ada", "middle": None, "last": "Lovelace"}) == {"name": "Ada Lovelace"}
    assert run({**step, "keep": True}, {"first": "Ada"}) == {"first": "Ada", "name": "Ada"}
    assert run(step, {"first": "Ada", "last": 7}) == {"first": "Ada", "last": 7}  # a non-string: nothing
    assert run(step, {"x": 1}) == {"x": 1}  # nothing to join


@pytest.mark.parametrize(
    ("value", "to", "expected"),
    [
        (12, "string", "12"),
        (12.0, "string", "12"),
        (True, "string", "true"),
        ("x", "string", "x"),
        (1.5, "string", 1.5),
        ("42", "integer", 42),
        ("-7", "integer", -7),
        (3.0, "integer", 3),
        ("4.2", "integer", "4.2"),
        (True, "integer", True),
        ("4.25", "number", 4.25),
        ("10", "number", 10),
        ("1e3", "number", 1000.0),
        ("abc", "number", "abc"),
        ("true", "boolean", True),
        ("false", "boolean", False),
        (1, "boolean", True),
        (0, "boolean", False),
        ("yes", "boolean", "yes"),
        (None, "string", None),
    ],
)
def test_convert(value: Any, to: str, expected: Any) -> None:
    out = run({"op": "convert", "path": "v", "to": to}, {"v": value})
    assert out == {"v": expected} and type(out["v"]) is type(expected)


def test_convert_value_of_an_unconvertible_value_is_missing() -> None:
    assert convert_value([1], "string") is not convert_value("1", "string")


def test_nested_objects_of_the_input_are_never_modified() -> None:
    data = {"a": {"b": {"c": 1}}, "keep": {"x": 1}}
    inner = data["a"]
    out = compile_chain(
        [
            STEP.validate_python({"op": "set", "path": "a.b.c", "value": 2}),
            STEP.validate_python({"op": "remove", "path": "a.b.d"}),
        ]
    )(data)
    assert out == {"a": {"b": {"c": 2}}, "keep": {"x": 1}}
    assert data == {"a": {"b": {"c": 1}}, "keep": {"x": 1}} and data["a"] is inner


def test_every_step_model_compiles() -> None:
    steps = [
        {"op": "rename", "from": "a", "to": "b"},
        {"op": "copy", "from": "a", "to": "b"},
        {"op": "add", "path": "a", "value": 1},
        {"op": "set", "path": "a", "value": 1},
        {"op": "remove", "path": "a"},
        {"op": "nest", "fields": ["a"], "into": "b"},
        {"op": "unnest", "path": "a"},
        {"op": "map", "path": "a", "table": {}},
        {"op": "split", "path": "a", "separator": ",", "into": ["b"]},
        {"op": "join", "fields": ["a"], "to": "b"},
        {"op": "convert", "path": "a", "to": "string"},
    ]
    for raw in steps:
        assert callable(compile_step(STEP.validate_python(raw)))


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ({"op": "renam", "from": "a", "to": "b"}, "op"),
        ({"op": "rename", "from": "", "to": "b"}, "from"),
        ({"op": "rename", "from": "a..b", "to": "b"}, "from"),
        ({"op": "rename", "from": [], "to": "b"}, "from"),
        ({"op": "split", "path": "a", "separator": "", "into": ["b"]}, "separator"),
        ({"op": "nest", "fields": [], "into": "b"}, "fields"),
        ({"op": "convert", "path": "a", "to": "date"}, "to"),
        ({"op": "add", "path": "a"}, "value"),
        ({"op": "remove", "path": "a", "extra": 1}, "extra"),
    ],
)
def test_malformed_steps_are_rejected_naming_the_problem(step: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SchemaDef.model_validate({"version": 2, "upcast_from": {"1": [step]}})
    text = str(exc.value)
    assert "upcast_from.1.0" in text and (where in text or "tag" in text)


def test_upcast_from_keys_must_be_below_the_version() -> None:
    with pytest.raises(ValidationError) as exc:
        RegisterSchemaRequest.model_validate({"event_type": "X", "schema": {"version": 2, "upcast_from": {"2": []}}})
    err = exc.value.errors()[0]
    assert err["loc"] == ("schema", "upcast_from") and "between 1 and 1" in err["msg"]


# --- chains -----------------------------------------------------------------------------------


def _def(version: int, upcast_from: dict[str, list[dict[str, Any]]] | None = None, **kw: Any) -> SchemaDef:
    return SchemaDef.model_validate({"version": version, "upcast_from": upcast_from or {}, **kw})


V2 = _def(2, {"1": [{"op": "rename", "from": "amt", "to": "amount"}]})
V3 = _def(
    3,
    {
        "2": [
            {"op": "add", "path": "currency", "value": "EUR"},
            {"op": "convert", "path": "amount", "to": "string"},
        ]
    },
)


def test_check_chain_accepts_a_chain_spread_over_versions() -> None:
    check_chain({2: V2, 3: V3})
    check_chain({3: _def(3, {"1": [], "2": []})})
    check_chain({1: _def(1)})


def test_check_chain_names_the_gap() -> None:
    with pytest.raises(InvalidRequestError) as exc:
        check_chain({3: V3})
    assert exc.value.details["field"] == "schema.upcast_from"
    assert exc.value.details["from_version"] == 1
    assert "1 to 2" in exc.value.message


def test_the_highest_version_that_defines_a_step_wins() -> None:
    fix = _def(3, {"1": [{"op": "rename", "from": "amt", "to": "value"}], "2": []})
    t = TypeSchemas("Paid", {2: V2, 3: fix})
    assert t.chain(1)({"amt": 1}) == {"value": 1}


def _row(data: Any, version: int | None = None, event_type: str = "Paid") -> dict[str, Any]:
    md = {} if version is None else {"schema_version": version}
    return {"event_type": event_type, "data": data, "metadata": md, "version": 0}


def test_upcast_through_the_chain_to_the_current_version() -> None:
    schemas = Schemas({"Paid": TypeSchemas("Paid", {2: V2, 3: V3})})
    rows = [_row({"amt": 5}), _row({"amount": 6}, 2), _row({"amount": "7", "currency": "NOK"}, 3)]
    stored = copy.deepcopy(rows)
    out = schemas.upcast(rows)
    assert [r["data"] for r in out] == [
        {"amount": "5", "currency": "EUR"},
        {"amount": "6", "currency": "EUR"},
        {"amount": "7", "currency": "NOK"},
    ]
    assert [r["metadata"]["schema_version"] for r in out] == [3, 3, 3]
    assert stored[0]["metadata"] == {}  # the stored form is a different object, untouched


def test_upcast_leaves_other_events_alone() -> None:
    schemas = Schemas({"Paid": TypeSchemas("Paid", {2: V2, 3: V3})})
    other = _row({"amt": 1}, event_type="Other")
    future = _row({"x": 1}, 9)
    scalar = _row("text")
    bad_version = _row({"amt": 1}, 0)
    bad_version["metadata"]["schema_version"] = "2"
    rows = [other, future, scalar, bad_version]
    before = copy.deepcopy(rows)
    assert schemas.upcast(rows) == before


def test_upcast_without_schemas_returns_the_same_rows() -> None:
    rows = [_row({"amt": 1})]
    assert Schemas().upcast(rows) is rows and rows[0]["data"] == {"amt": 1}


def test_chains_are_compiled_once_per_type_and_version() -> None:
    t = TypeSchemas("Paid", {2: V2, 3: V3})
    assert t.chain(1) is t.chain(1)
    assert t.chain(1) is not t.chain(2)


def test_a_missing_from_version_means_no_change() -> None:
    # upcast_from of 3 defines "2" only; an event at version 1 has nothing to do for 1 -> 2
    t = TypeSchemas("T", {3: _def(3, {"1": [], "2": [{"op": "set", "path": "v", "value": 3}]})})
    assert t.chain(1)({"a": 1}) == {"a": 1, "v": 3}


# --- JSON Schema --------------------------------------------------------------------------------

PAID_SCHEMA = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string"},
        "payer": {"type": "object", "properties": {"iban": {"type": "string"}}, "additionalProperties": False},
    },
}


def _schemas() -> Schemas:
    return Schemas({"Paid": TypeSchemas("Paid", {1: _def(1, json_schema=PAID_SCHEMA), 2: V2})})


def test_validate_names_the_bad_field() -> None:
    s = _schemas()
    s.validate("Paid", {"amount": 1, "currency": "EUR"})
    with pytest.raises(InvalidRequestError) as exc:
        s.validate("Paid", {"amount": -1, "currency": "EUR"})
    assert exc.value.details["field"] == "data.amount"
    with pytest.raises(InvalidRequestError) as exc:
        s.validate("Paid", {"amount": 1})
    assert exc.value.details["field"] == "data.currency"
    with pytest.raises(InvalidRequestError) as exc:
        s.validate("Paid", {"amount": 1, "currency": "EUR", "payer": {"iban": "x", "bic": "y"}})
    assert exc.value.details["field"] == "data.payer.bic"
    assert exc.value.details["event_type"] == "Paid" and exc.value.details["schema_version"] == 1


def test_validate_uses_the_events_own_version() -> None:
    s = _schemas()
    s.validate("Paid", {"anything": True}, 2)  # version 2 has no JSON Schema
    s.validate("Unknown", 5)  # no schema at all
    with pytest.raises(InvalidRequestError) as exc:
        s.validate("Paid", {}, 3)
    assert exc.value.details["field"] == "metadata.schema_version"


class _Ev:
    def __init__(self, event_type: str, data: Any, metadata: dict[str, Any] | None = None) -> None:
        self.event_type, self.data, self.metadata = event_type, data, metadata or {}


def test_check_append_names_the_event() -> None:
    s = _schemas()
    good = _Ev("Paid", {"amount": 1, "currency": "EUR"})
    with pytest.raises(InvalidRequestError) as exc:
        s.check_append([good, _Ev("Other", 1), _Ev("Paid", {"amount": "1", "currency": "EUR"})])
    assert exc.value.details["field"] == "events.2.data.amount"
    with pytest.raises(InvalidRequestError) as exc:
        s.check_append([_Ev("Paid", {}, {"schema_version": "one"})])
    assert exc.value.details["field"] == "events.0.metadata.schema_version"
    s.check_append([good, _Ev("Paid", {"free": 1}, {"schema_version": 2})])


def test_check_json_schema() -> None:
    check_json_schema(PAID_SCHEMA)
    check_json_schema(True)
    with pytest.raises(InvalidRequestError) as exc:
        check_json_schema({"type": "object", "properties": {"a": {"type": "nonsense"}}})
    assert exc.value.details["field"].startswith("schema.json_schema")
    with pytest.raises(InvalidRequestError) as exc:
        check_json_schema({"$schema": "https://example.com/not-a-dialect"})
    assert exc.value.details["field"] == "schema.json_schema.$schema"


def test_stored_form_round_trips() -> None:
    t = TypeSchemas("Paid", {2: V2, 3: V3}, {2: 10, 3: 20})
    doc = {
        "event_type": "Paid",
        "versions": {str(v): {**s.stored(), "registered_at": t.registered_at[v]} for v, s in t.versions.items()},
    }
    back = TypeSchemas.from_stored(doc)
    assert back.current == 3 and back.registered_at == {2: 10, 3: 20}
    assert back.chain(1)({"amt": 1}) == t.chain(1)({"amt": 1})
    assert V2.stored() == {"version": 2, "upcast_from": {"1": [{"op": "rename", "from": "amt", "to": "amount"}]}}


# --- KV keys ------------------------------------------------------------------------------------


def test_kv_tokens_are_valid_keys_and_injective() -> None:
    import re

    ids = ["a.b", "a", "b", "*", ">", "%41", "A", "=41", "a b", "ü", "a=b", "a%3Db", "", "$KV", "a/b"]
    tokens = [kv_token(i) for i in ids if i]
    assert len(set(tokens)) == len(tokens)
    assert all(re.fullmatch(r"[-_=A-Za-z0-9]+", t) for t in tokens)
    assert kv_token("order-42") == "order-42"
