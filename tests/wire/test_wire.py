"""The golden wire files (tests/wire/, written by tools/gen_wire.py) against the models, the
codecs and a live service.

* Every golden request validates against its op's request model (the ``-invalid`` one must
  not), and every golden reply against the op's reply model or the error envelope.
* Every file decodes and encodes back to the same bytes with its codec, so the files are
  exactly what a service sends and what a client in another language should produce.
* A live service answers each golden request (sent as the file's bytes, in order, in a fresh
  store) with a reply of the golden shape: same fields, same values, except the fields the
  manifest lists as volatile (timestamps, positions, the store's name, subscription progress),
  whose type only is compared.

When a model changes on purpose, regenerate with ``.venv/bin/python tools/gen_wire.py`` and
review the diff: it is the wire change other-language clients will see.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec
from esdb_gater.shared.core.errors import ERROR_CODE_HEADER, ERROR_HEADER
from esdb_gater.shared.runtime.runner import Running
from tools.gen_schemas import ErrorEnvelope
from tools.gen_wire import op_table

WIRE = Path(__file__).resolve().parent
MANIFEST = json.loads((WIRE / "cases.json").read_text())
CASES: list[dict[str, Any]] = MANIFEST["cases"]
VOLATILE: set[str] = set(MANIFEST["volatile"])
CODECS: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK}
OPS = op_table()


def _file(case: dict[str, Any], part: str, ext: str) -> bytes:
    return (WIRE / f"{case['case']}.{part}.{ext}").read_bytes()


def test_every_op_of_both_services_has_a_golden_request() -> None:
    covered = {(c["service"], c["op"]) for c in CASES}
    assert set(OPS) <= covered, f"no golden case for {sorted(set(OPS) - covered)}; add one to tools/gen_wire.py"
    assert {c["expect"] for c in CASES} == {"reply", "error"}


def test_no_stray_files() -> None:
    expected = {"cases.json"} | {
        f"{c['case']}.{part}.{ext}" for c in CASES for part in ("request", c["expect"]) for ext in CODECS
    }
    present = {p.name for p in WIRE.iterdir() if p.suffix in (".json", ".msgpack")}
    assert present == expected


@pytest.mark.parametrize("ext", list(CODECS))
@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_golden_files_validate_and_round_trip_byte_for_byte(case: dict[str, Any], ext: str) -> None:
    codec = CODECS[ext]
    op = OPS[(case["service"], case["op"])]
    for part in ("request", case["expect"]):
        data = _file(case, part, ext)
        assert codec.encode(codec.decode(data)) == data, f"{case['case']}.{part}.{ext} does not round-trip"
    request = codec.decode(_file(case, "request", ext))
    if case["case"].endswith("-invalid"):
        with pytest.raises(ValidationError):
            op.request.model_validate(request)
    else:
        op.request.model_validate(request)
    reply = codec.decode(_file(case, case["expect"], ext))
    (ErrorEnvelope if case["expect"] == "error" else op.response).model_validate(reply)
    if "binary" not in case["case"]:  # binary data is base64 text in JSON and bin in msgpack
        assert request == JSON.decode(_file(case, "request", "json"))


# --- against a live service ----------------------------------------------------------------------


def _family(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return type(v).__name__


def shape_diff(golden: Any, actual: Any, volatile: set[str], path: str = "") -> list[str]:
    """Where ``actual`` differs from ``golden``, ignoring the values (not the presence) of
    volatile fields: a name in ``volatile`` matches a field anywhere, a dotted path one place."""
    name = path.rsplit(".", 1)[-1]
    if path and (name in volatile or path in volatile):
        fam = {_family(golden), _family(actual)}
        return [] if len(fam) == 1 or "null" in fam else [f"{path}: {_family(golden)} vs {_family(actual)}"]
    if isinstance(golden, dict) and isinstance(actual, dict):
        out = []
        if set(golden) != set(actual):
            out.append(f"{path or '.'}: fields {sorted(golden)} vs {sorted(actual)}")
        for k in set(golden) & set(actual):
            out += shape_diff(golden[k], actual[k], volatile, f"{path}.{k}" if path else k)
        return out
    if isinstance(golden, list) and isinstance(actual, list):
        if len(golden) != len(actual):
            return [f"{path}: {len(golden)} items vs {len(actual)}"]
        out = []
        for g, a in zip(golden, actual, strict=True):
            out += shape_diff(g, a, volatile, path)
        return out
    if _family(golden) != _family(actual) or golden != actual:
        return [f"{path}: {golden!r} vs {actual!r}"]
    return []


def test_shape_diff_ignores_only_volatile_values() -> None:
    g = {"events": [{"timestamp": 1, "version": 0}], "store": "a"}
    assert shape_diff(g, {"events": [{"timestamp": 2, "version": 0}], "store": "b"}, {"timestamp", "store"}) == []
    assert shape_diff(g, {"events": [{"timestamp": 2, "version": 1}], "store": "a"}, {"timestamp"})
    assert shape_diff(g, {"events": [{"timestamp": "x", "version": 0}], "store": "a"}, {"timestamp"})
    assert shape_diff(g, {"events": [{"version": 0}], "store": "a"}, {"timestamp"})  # a volatile field must be there


async def _request_until_not_retryable(
    nc: Client, subject: str, case: dict[str, Any], ext: str, headers: dict[str, str] | None, within: float = 15.0
) -> Msg:
    """The reply, asking again while it is a retryable error (``unavailable``: e.g. a subscription
    just saved whose driver has not started yet on a busy session server), as a client would."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        msg = await nc.request(subject, _file(case, "request", ext), timeout=10, headers=headers)
        hdrs = msg.headers or {}
        if case["expect"] == "error" or ERROR_CODE_HEADER not in hdrs or loop.time() > deadline:
            return msg
        body = CODECS[ext].decode(msg.data)
        if not (isinstance(body, dict) and body.get("error", {}).get("retryable")):
            return msg
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("ext", list(CODECS))
async def test_a_live_service_answers_each_golden_request_with_the_golden_shape(
    services: Running, nc: Client, ext: str
) -> None:
    codec = CODECS[ext]
    store = "wire" + uuid.uuid4().hex[:10]
    headers = {CONTENT_TYPE_HEADER: MSGPACK.content_type} if codec is MSGPACK else None
    problems: list[str] = []
    for case in CASES:
        subject = f"esdb.api.{store}.{case['service']}.{case['op']}"
        msg = await _request_until_not_retryable(nc, subject, case, ext, headers)
        hdrs = msg.headers or {}
        is_error = ERROR_CODE_HEADER in hdrs
        if is_error != (case["expect"] == "error"):
            problems.append(f"{case['case']}: expected a {case['expect']}, got {msg.data[:300]!r}")
            continue
        if is_error:
            assert hdrs.get(ERROR_HEADER), hdrs
        assert (hdrs.get(CONTENT_TYPE_HEADER) == MSGPACK.content_type) == (codec is MSGPACK), hdrs
        golden = codec.decode(_file(case, case["expect"], ext))
        diff = shape_diff(golden, codec.decode(msg.data), VOLATILE | set(case["volatile"]))
        problems += [f"{case['case']}: {d}" for d in diff]
    assert problems == [], "replies differ from tests/wire/ (regenerate with tools/gen_wire.py if intended):\n" + (
        "\n".join(problems)
    )
