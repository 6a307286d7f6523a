"""The AsyncAPI 3.0 document (docs/api/asyncapi.json, tools/gen_asyncapi.py): up to date, valid
against the official AsyncAPI 3.0.0 JSON Schema (vendored: tools/asyncapi-3.0.0.schema.json),
one channel and operation per public subject with its reply and the error envelope, and payload
schemas that agree with the golden wire files (tests/wire) and the strict request models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from esdb_gater.shared.core.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorCode
from tools import gen_asyncapi

ROOT = Path(__file__).resolve().parents[2]
WIRE = ROOT / "tests" / "wire"
URN = "urn:esdb-gater:asyncapi"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return gen_asyncapi.build()


def _payload_validator(doc: dict[str, Any], message: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(URN, DRAFT7.create_resource(doc))
    ref = doc["components"]["messages"][message]["payload"]["$ref"]
    return Draft7Validator({"$ref": URN + ref}, registry=registry)


def test_the_checked_in_document_is_current_and_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_asyncapi.main(["--check"]) == 0, capsys.readouterr().out
    on_disk = json.loads((ROOT / "docs" / "api" / "asyncapi.json").read_text())
    assert on_disk["asyncapi"] == "3.0.0"


def test_the_vendored_spec_schema_is_the_official_draft7_one() -> None:
    spec = json.loads(gen_asyncapi.SPEC_SCHEMA.read_text())
    assert spec["$schema"] == "http://json-schema.org/draft-07/schema"
    assert spec["properties"]["asyncapi"]["const"] == "3.0.0"
    Draft7Validator.check_schema(spec)


def test_validation_catches_a_broken_document(doc: dict[str, Any]) -> None:
    assert gen_asyncapi.validate(doc) == []
    broken = json.loads(json.dumps(doc))
    broken["operations"]["stream.append"]["action"] = "publish"  # AsyncAPI 2's word, not 3's
    broken["components"]["schemas"]["ReadRequest"]["type"] = 5
    problems = gen_asyncapi.validate(broken)
    assert any(p.startswith("operations/stream.append") for p in problems), problems
    assert any(p.startswith("components/schemas/ReadRequest") for p in problems), problems


def test_every_public_subject_has_a_channel_an_operation_and_replies(doc: dict[str, Any]) -> None:
    ops = gen_asyncapi._ops()
    assert len(ops) > 50
    for token, op in ops:
        key = f"{token}.{op.name}"
        store = "_" if op.scope == "global" else "{store}"
        channel = doc["channels"][key]
        assert channel["address"] == f"{{prefix}}.api.{store}.{token}.{op.name}"
        assert ("store" in channel["parameters"]) == (op.scope != "global")
        operation = doc["operations"][key]
        assert operation["action"] == "receive"
        assert operation["channel"] == {"$ref": f"#/channels/{key}"}
        replies = {m["$ref"].rsplit("/", 1)[1] for m in operation["reply"]["messages"]}
        assert replies == {"reply", "error"}
        assert (ROOT / "docs" / "api" / doc["components"]["messages"][f"{key}.request"]["x-schema-file"]).is_file()
    assert doc["channels"]["channel.delivery"]["address"] == "{prefix}.ch.{channel}.{topic}"
    assert doc["operations"]["channel.deliver"]["action"] == "send"
    assert doc["operations"]["subscription.deliver"]["action"] == "send"
    error = doc["components"]["messages"]["error"]
    assert set(error["headers"]["required"]) == {ERROR_HEADER, ERROR_CODE_HEADER}
    assert error["x-error-codes"] == [c.value for c in ErrorCode]


def test_payload_schemas_accept_the_golden_wire_files(doc: dict[str, Any]) -> None:
    cases = json.loads((WIRE / "cases.json").read_text())["cases"]
    answered = [c for c in cases if c["expect"] == "reply"]
    assert answered and len(answered) < len(cases)
    for case in cases:
        key, name = f"{case['service']}.{case['op']}", case["case"]
        request = json.loads((WIRE / f"{name}.request.json").read_text())
        if case["expect"] == "reply":  # a request the service answered is valid by the schema too
            errs = list(_payload_validator(doc, f"{key}.request").iter_errors(request))
            assert not errs, (name, [e.message for e in errs])
            reply = json.loads((WIRE / f"{name}.reply.json").read_text())
            errs = list(_payload_validator(doc, f"{key}.reply").iter_errors(reply))
            assert not errs, (name, [e.message for e in errs])
        else:
            error = json.loads((WIRE / f"{name}.error.json").read_text())
            assert not list(_payload_validator(doc, "error").iter_errors(error)), name


def test_payload_schemas_refuse_what_the_strict_models_refuse(doc: dict[str, Any]) -> None:
    from esdb_gater.shared.models.stream import ReadRequest

    read = _payload_validator(doc, "stream.read.request")
    for bad in ({"stream_id": "s", "count": "10"}, {"stream_id": "s", "raw": 1}, {"stream_id": "s", "nope": 1}):
        assert list(read.iter_errors(bad)), bad
        with pytest.raises(ValueError):
            ReadRequest.model_validate(bad)
