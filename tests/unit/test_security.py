"""HMAC signing of channel messages: the canonical form, the published test vectors, every
rejection of ``verify``, replay protection and where the secret comes from."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from esdb_gater.shared.core.errors import (
    InvalidSignatureError,
    InvalidTimestampError,
    MessageExpiredError,
    MissingTimestampError,
    SignatureRequiredError,
)
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.security import signing as security

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "docs" / "hmac-vectors.json").read_text())["vectors"]
NOW = 1_700_000_000


# --- canonical JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [1, 2, {"d": None, "c": True}]}, '{"a":[1,2,{"c":true,"d":null}],"b":1}'),
        (
            [1.0, 0.1, 1e21, 1.5e-7, -0.0, 1e-6, 1e-7, 123.456, 5e-324, 1.7976931348623157e308],
            "[1,0.1,1e+21,1.5e-7,0,0.000001,1e-7,123.456,5e-324,1.7976931348623157e+308]",
        ),
        (1e20, "100000000000000000000"),
        (-2.5, "-2.5"),
        (2**53 + 1, "9007199254740993"),
        ('a"b\\c\n\r\t\b\f\x00\x1f\x7f\u2028é😀/', '"a\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\x7f\u2028é😀/"'),
        ({"\ue000": 1, "😀": 2, "a": 3, "B": 4}, '{"B":4,"a":3,"😀":2,"\ue000":1}'),
        ({}, "{}"),
        ([], "[]"),
    ],
)
def test_canonical_json_matches_json_stringify_with_sorted_keys(value: Any, expected: str) -> None:
    assert security.canonical_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize("value", [math.nan, math.inf, {1: "x"}, b"bytes", {"s": {1, 2}}, "\ud800"])
def test_canonical_json_refuses_what_is_not_json(value: Any) -> None:
    with pytest.raises(ValueError):
        security.canonical_json(value)


def test_canonical_json_refuses_absurd_nesting() -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nesting"):
        security.canonical_json(deep)


# --- the published vectors ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vectors(vector: dict[str, Any]) -> None:
    message = vector["message"]
    body = {k: v for k, v in message.items() if k != "signature"}
    assert security.canonical_json(body).decode("utf-8") == vector["canonical"]
    assert security.signature_of(message, vector["secret"]) == vector["signature"]
    assert security.sign(body, vector["secret"], now=message["signed_at"]) == message
    security.verify(message, vector["secret"], now=message["signed_at"])


def test_vectors_are_printed_in_the_docs() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    assert len(VECTORS) >= 5
    for v in VECTORS:
        assert v["signature"] in doc, v["name"]


# --- sign ----------------------------------------------------------------------------------------


def test_sign_adds_signed_at_and_signature_without_touching_the_input() -> None:
    msg = {"text": "hi", "signed_at": 5, "signature": "old"}
    signed = security.sign(msg, "k", now=NOW)
    assert msg == {"text": "hi", "signed_at": 5, "signature": "old"}
    assert signed["signed_at"] == NOW
    assert signed["signature"] == security.signature_of({"text": "hi", "signed_at": NOW}, "k")
    assert len(signed["signature"]) == 44 and signed["signature"].endswith("=")
    assert security.sign(msg, b"k", now=NOW) == signed  # str and bytes secrets are the same UTF-8 bytes


def test_set_secret_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "_secret", None)
    with pytest.raises(ValueError, match="no HMAC secret"):
        security.sign({"a": 1})
    with pytest.raises(ValueError, match="empty"):
        security.set_secret("")
    security.set_secret("process-wide")
    signed = security.sign({"a": 1})
    security.verify(signed)
    security.verify(signed, "process-wide")
    with pytest.raises(InvalidSignatureError):
        security.verify(signed, "another")


# --- verify: every rejection, in order -------------------------------------------------------------


def _signed(**fields: Any) -> dict[str, Any]:
    return security.sign({"text": "x", **fields}, "k", now=NOW)


def test_verify_accepts_fresh_and_slightly_future_messages() -> None:
    security.verify(_signed(), "k", now=NOW)
    security.verify(_signed(), "k", now=NOW + 300)
    security.verify(_signed(), "k", now=NOW - 5)  # signed 5 s "in the future": within the skew


def test_missing_signature() -> None:
    for msg in ({"text": "x", "signed_at": NOW}, "not an object", None, [1, 2]):
        with pytest.raises(SignatureRequiredError) as exc:
            security.verify(msg, "k", now=NOW)
        assert exc.value.code == "signature_required"


def test_missing_and_invalid_timestamps() -> None:
    signed = _signed()
    del signed["signed_at"]
    with pytest.raises(MissingTimestampError):
        security.verify(signed, "k", now=NOW)
    for bad in ("1700000000", 1700000000.5, True, None, [NOW]):
        with pytest.raises(InvalidTimestampError) as exc:
            security.verify({**_signed(), "signed_at": bad}, "k", now=NOW)
        assert exc.value.details["reason"] == "not_integer"


def test_future_messages_are_rejected() -> None:
    with pytest.raises(InvalidTimestampError) as exc:
        security.verify(_signed(), "k", now=NOW - 6)
    assert exc.value.details["reason"] == "in_future"
    security.verify(_signed(), "k", now=NOW - 60, max_skew_s=60)


def test_expired_messages_are_rejected_with_a_configurable_ttl() -> None:
    with pytest.raises(MessageExpiredError) as exc:
        security.verify(_signed(), "k", now=NOW + 301)
    assert exc.value.details == {"signed_at": NOW, "ttl_s": 300}
    with pytest.raises(MessageExpiredError):
        security.verify(_signed(), "k", now=NOW + 11, ttl_s=10)
    security.verify(_signed(), "k", now=NOW + 3000, ttl_s=3600)


def test_forged_and_tampered_signatures() -> None:
    forged = security.sign({"text": "x"}, "not-the-secret", now=NOW)
    tampered = {**_signed(), "text": "y"}
    retimed = {**_signed(), "signed_at": NOW + 1}
    for msg in (forged, tampered, retimed, {**_signed(), "signature": "bad_sig"}, {**_signed(), "signature": ""}):
        with pytest.raises(InvalidSignatureError) as exc:
            security.verify(msg, "k", now=NOW)
        assert exc.value.details["reason"] == "mismatch"
    for sig in (None, 12, ["x"]):
        with pytest.raises(InvalidSignatureError) as exc:
            security.verify({**_signed(), "signature": sig}, "k", now=NOW)
        assert exc.value.details["reason"] == "malformed"
    with pytest.raises(InvalidSignatureError) as exc:
        security.verify({**_signed(), "signature": "\ud800é"}, "k", now=NOW)
    assert exc.value.details["reason"] == "mismatch"


def test_a_message_that_cannot_be_canonical_cannot_verify() -> None:
    msg = {**_signed(), "blob": b"\x00\x01"}
    with pytest.raises(InvalidSignatureError) as exc:
        security.verify(msg, "k", now=NOW)
    assert exc.value.details["reason"] == "not_canonical"


# --- replays -------------------------------------------------------------------------------------


async def test_verify_once_rejects_a_replay() -> None:
    guard = security.MemoryReplayGuard()
    msg = security.sign({"text": "once"}, "k")
    await security.verify_once(msg, guard, "k")
    with pytest.raises(InvalidSignatureError) as exc:
        await security.verify_once(msg, guard, "k")
    assert exc.value.details["reason"] == "replayed"
    await security.verify_once(security.sign({"text": "once", "n": 2}, "k"), guard, "k")
    assert len(guard) == 2


async def test_memory_replay_guard_is_bounded_and_forgets_expired_signatures() -> None:
    guard = security.MemoryReplayGuard(max_entries=100)
    for i in range(1000):
        assert await guard.first_seen(f"sig-{i}", 4e9)
    assert len(guard) <= 100
    assert not await guard.first_seen("sig-999", 4e9)
    assert await guard.first_seen("sig-0", 4e9)  # pushed out by newer ones: memory stays bounded
    assert await guard.first_seen("old", 1.0)  # already expired: remembered for nothing
    assert await guard.first_seen("old", 4e9)


# --- the secret ------------------------------------------------------------------------------------


def test_resolve_secret_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "secret"
    file.write_bytes(b"from-a-file\n")
    monkeypatch.setenv("ESDB_GATER_SECRET", "from-env")
    assert security.resolve_secret("from-setting", file) == (b"from-setting", "setting")
    assert security.resolve_secret(None, file) == (b"from-a-file", "file")
    assert security.resolve_secret(None, None) == (b"from-env", "ESDB_GATER_SECRET")
    monkeypatch.delenv("ESDB_GATER_SECRET")
    with caplog.at_level(logging.WARNING):
        secret, source = security.resolve_secret(None, None)
    assert source == "random" and len(secret) == 32
    assert "random" in caplog.text and secret.hex() not in caplog.text
    file.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        security.resolve_secret(None, file)


def test_the_secret_setting_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESDB_GATER_CHANNELS__HMAC_SECRET", "hunter2-very-secret")
    settings = Settings()
    assert settings.channels.hmac_secret is not None
    assert settings.channels.hmac_secret.get_secret_value() == "hunter2-very-secret"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in text
