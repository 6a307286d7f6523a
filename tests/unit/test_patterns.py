"""Client patterns run in RE2 (shared/core/patterns.py, shared/upcasting/registry.py, services/link/rules.py;
ADR 0017)."""

from __future__ import annotations

from typing import Any

import jsonschema._legacy_keywords
import jsonschema._utils
import pytest

from esdb_gater.services.link.rules import compile_filter, pattern_regex
from esdb_gater.services.scavenger import engine
from esdb_gater.shared.core import patterns
from esdb_gater.shared.core.errors import InvalidRequestError
from esdb_gater.shared.models.link import FieldFilter
from esdb_gater.shared.upcasting.steps import Schemas, TypeSchemas, check_json_schema, uses_patterns

EVIL = "^(a+)+$"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(a)\1", "backreferences"),
        ("(?=a)", "lookaround"),
        ("(?<!a)b", "RE2"),
        ("a" * (patterns.MAX_PATTERN_CHARS + 1), "at most"),
        (r"\pL{1,200}", "too large"),
        ("(", "RE2"),
        ("\ud800", "UTF-8"),
    ],
)
def test_refused_patterns_say_why(pattern: str, says: str) -> None:
    reason = patterns.check_pattern(pattern)
    assert reason is not None and says in reason
    with pytest.raises(patterns.PatternError):
        patterns.search(pattern, "x")


def test_search_is_re_search_and_linear() -> None:
    assert patterns.search(EVIL, "a" * 10)
    assert not patterns.search(EVIL, "a" * 100_000 + "!")  # 2^100000 steps for a backtracking engine
    assert patterns.search("b", "abc") and not patterns.search("^b", "abc")
    assert patterns.search(r"^\pL+$", "Zoë")  # RE2 syntax (Python's re has no \pL)
    assert patterns.search("a", "a\ud800")  # a lone surrogate does not crash the match
    assert patterns.matcher("x$")("abx") and not patterns.matcher("x$")("xa")


def test_compiled_patterns_are_cached() -> None:
    assert patterns.compile_pattern("ab+c") is patterns.compile_pattern("ab+c")


def test_glob_is_anchored_literal_and_linear() -> None:
    rx = patterns.glob("acct-*")
    assert rx.fullmatch("acct-1") and rx.fullmatch("acct-") and not rx.fullmatch("xacct-1")
    assert patterns.glob("a.b").fullmatch("a.b") and not patterns.glob("a.b").fullmatch("axb")
    assert patterns.glob("a*\n*").fullmatch("a\nb\n")  # '*' crosses newlines
    stars = "*" + "a*" * 100 + "c"
    assert not pattern_regex(stars).fullmatch("a" * 5000)
    assert engine.pattern_regex(stars).fullmatch("a" * 100 + "c")


# --- JSON Schema -----------------------------------------------------------------------------


def _schemas(js: dict[str, Any]) -> Schemas:
    from esdb_gater.shared.models.schema import SchemaDef

    return Schemas({"T": TypeSchemas("T", {1: SchemaDef.model_validate({"version": 1, "json_schema": js})})})


@pytest.mark.parametrize(
    "js",
    [
        {"properties": {"p": {"pattern": r"(a)\1"}}},
        {"patternProperties": {"(?=x)": {}}},
        {"$defs": {"d": {"items": [{"pattern": "(?<=a)"}]}}},
        {"$schema": "http://json-schema.org/draft-04/schema#", "patternProperties": {r"(a)\1": {}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"p": {"pattern": "(?!a)"}}},
    ],
)
def test_check_json_schema_refuses_patterns_re2_cannot_run(js: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_json_schema(js)
    assert caught.value.details["field"].startswith("schema.json_schema")
    assert caught.value.details["reason"]


def test_patterns_inside_data_keywords_are_data() -> None:
    check_json_schema({"const": {"pattern": r"(a)\1"}, "enum": [{"patternProperties": {"(?=": 1}}]})
    check_json_schema({"properties": {"p": {"pattern": r"^\pL+$"}}})  # RE2, not Python, syntax
    assert uses_patterns({"properties": {"p": {"pattern": "x"}}})
    assert not uses_patterns({"const": {"pattern": "x"}, "properties": {"pattern": {"type": "string"}}})


@pytest.mark.parametrize(
    ("js", "good", "bad"),
    [
        ({"properties": {"n": {"pattern": r"^\pL+$"}}}, {"n": "Zoë"}, {"n": "Zoë!"}),
        ({"patternProperties": {r"^\pL+$": {"type": "integer"}}}, {"Zoë": 1}, {"Zoë": "x"}),
        (
            {"patternProperties": {r"^\pL+$": {}}, "additionalProperties": False},
            {"Zoë": 1},
            {"Zoë1": 1},
        ),
        (
            {"patternProperties": {r"^\pL+$": {}}, "unevaluatedProperties": False},
            {"Zoë": 1},
            {"Zoë1": 1},
        ),
        (
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "patternProperties": {r"^\pL+$": {}},
                "unevaluatedProperties": False,
            },
            {"Zoë": 1},
            {"Zoë1": 1},
        ),
    ],
)
def test_every_keyword_that_matches_runs_re2(js: dict[str, Any], good: dict[str, Any], bad: dict[str, Any]) -> None:
    """``\\pL`` is an error in Python's ``re``: these pass only because RE2 ran the pattern."""
    check_json_schema(js)
    s = _schemas(js)
    s.validate("T", good)
    with pytest.raises(InvalidRequestError):
        s.validate("T", bad)


def test_hostile_schema_validates_in_linear_time() -> None:
    js = {"properties": {"n": {"pattern": EVIL}}, "patternProperties": {EVIL: {}}, "additionalProperties": False}
    s = _schemas(js)
    with pytest.raises(InvalidRequestError):
        s.validate("T", {"n": "a" * 200_000 + "!"})
    with pytest.raises(InvalidRequestError):
        s.validate("T", {"a" * 200_000 + "!": 1})


def test_a_stored_schema_with_a_refused_pattern_cannot_be_applied() -> None:
    """Stored before patterns were checked: appends of its type are refused, never run in ``re``."""
    s = _schemas({"properties": {"n": {"pattern": r"(a)\1"}}})
    with pytest.raises(InvalidRequestError) as caught:
        s.validate("T", {"n": "aa"})
    assert "cannot be applied" in caught.value.message


def test_jsonschema_helpers_search_with_re2() -> None:
    assert jsonschema._utils.re.search(r"^\pL$", "é")  # type: ignore[attr-defined]
    assert jsonschema._legacy_keywords.re.search(r"^\pL$", "é")  # type: ignore[attr-defined]


def test_matches_patterns_flags_types_with_regexes() -> None:
    class Ev:
        def __init__(self, t: str) -> None:
            self.event_type = t

    s = _schemas({"properties": {"n": {"pattern": "x"}}})
    assert s.matches_patterns([Ev("T")]) and not s.matches_patterns([Ev("U")])
    assert not _schemas({"type": "object"}).matches_patterns([Ev("T")])


# --- link filters ----------------------------------------------------------------------------


def test_link_matches_filter_is_re2() -> None:
    with pytest.raises(ValueError, match="RE2"):
        FieldFilter.model_validate({"field": "data.s", "op": "matches", "value": r"(a)\1"})
    pred = compile_filter({"field": "data.s", "op": "matches", "value": EVIL})
    assert not pred({"data": {"s": "a" * 100_000 + "!"}})
    assert pred({"data": {"s": "aaa"}})
    assert compile_filter({"field": "data.s", "op": "matches", "value": r"\pL"})({"data": {"s": "é"}})
