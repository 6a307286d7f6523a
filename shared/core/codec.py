"""Body codecs, chosen by the request's ``Content-Type`` header (SPEC.md §2).

JSON is the default so ``nats req`` works; ``Content-Type: application/msgpack`` selects
msgpack, and the reply is sent in the codec of the request. Bytes (binary event data) travel as
msgpack ``bin`` and, in JSON, as base64 strings: the JSON encoder turns ``bytes`` into base64 and
the models turn base64 back into bytes where the content type says the value is binary.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, Final, Protocol

import msgpack

from esdb_gater.shared.core.errors import InvalidRequestError

__all__ = ["CONTENT_TYPE_HEADER", "INT_MAX", "INT_MIN", "JSON", "MSGPACK", "Codec", "check_value", "codec_for"]

CONTENT_TYPE_HEADER: Final = "Content-Type"

# Every integer a request may carry: what msgpack (and so the event log) can hold, signed or
# unsigned 64 bits. Anything else is an invalid_request, in JSON and msgpack alike.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

# Cheap byte scans that say whether a decoded body can hold a value check_value refuses; only
# then is the decoded value walked (JSON: a long digit run, a 3-digit exponent or a surrogate
# escape; msgpack: bin (a map key may be bytes), a float, or the timestamp extension).
_JSON_SUSPECT: Final = re.compile(rb"\d{19}|[eE][+-]?\d{3}|\\u[dD][89a-fA-F]")
# The same test without the regex engine (which tries three branches at every byte): digits to
# "0", e/E to "e", +/- to "+", the rest to " ", then substring tests; same answer, ~5x quicker.
_SUSPECT_TABLE: Final = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else ord("e") if b in b"eE" else ord("+") if b in b"+-" else ord(" ")
    for b in range(256)
)
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_suspect(data: bytes) -> bool:
    """Whether ``data`` may hold a value ``check_value`` refuses (what ``_JSON_SUSPECT`` finds)."""
    t = data.translate(_SUSPECT_TABLE)
    if b"0000000000000000000" in t or b"e000" in t or b"e+000" in t:
        return True
    return b"\\u" in data and _SURROGATE_ESCAPE.search(data) is not None


_MSGPACK_SUSPECT: Final = re.compile(rb"[\xc4-\xc6\xca\xcb\xc7-\xc9\xd4-\xd8]")


def _bad_scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else "integer outside the signed/unsigned 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "number is not finite"
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string is not valid UTF-8 (lone surrogate)"
    return None


def _first_problem(value: Any) -> tuple[str, str] | None:
    """(dotted path, reason) of the first value ``check_value`` refuses, or None. Iterative: the
    depth of a body is bounded by the decoders, not by this walk."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    return (path or "body", "object keys must be strings")
                reason = _bad_scalar(k)
                if reason is not None:
                    return (path or "body", f"key: {reason}")
                stack.append((item, f"{path}.{k}" if path else k))
        elif isinstance(v, list | tuple):
            for i, item in enumerate(v):
                stack.append((item, f"{path}.{i}" if path else str(i)))
        else:
            reason = _bad_scalar(v)
            if reason is not None:
                return (path or "body", reason)
    return None


def check_value(value: Any) -> Any:
    """``value`` if every integer in it fits 64 bits, every float is finite, every string is
    valid UTF-8 and every object key is a string; else ``InvalidRequestError`` naming the field."""
    problem = _first_problem(value)
    if problem is not None:
        field, reason = problem
        field = field[:200]
        raise InvalidRequestError(f"{field}: {reason}", details={"field": field, "reason": reason})
    return value


class Codec(Protocol):
    """Structural, so a test double or a future codec needs no base class."""

    content_type: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)


class JsonCodec:
    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        return _ENCODER.encode(value).encode()

    def decode(self, data: bytes) -> Any:
        if not data:
            return {}
        try:
            # json.loads(data, parse_constant=…) without building a JSONDecoder per call, and
            # strict: raw surrogate bytes (ED A0 80) are not UTF-8 (json.loads lets them through)
            value = _DECODER.decode(data.decode(json.detect_encoding(data)))
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, huge int literals
            raise InvalidRequestError(
                "request body is not valid JSON", details={"field": "body", "reason": str(exc)[:200]}
            ) from None
        except RecursionError:
            raise InvalidRequestError(
                "request body nests too deeply", details={"field": "body", "reason": "nesting"}
            ) from None
        if _json_suspect(data):
            check_value(value)
        return value


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not supported")


class MsgpackCodec:
    """msgpack with ``bin`` for bytes. The timestamp extension (-1) decodes to an integer of
    nanoseconds since the epoch, so every decoded value can also be answered in JSON; any other
    extension type is an ``invalid_request``."""

    content_type = "application/msgpack"

    def encode(self, value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        if not data:
            return {}
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=2, ext_hook=_reject_ext)
        except Exception as exc:  # msgpack raises many unrelated types for bad input
            raise InvalidRequestError(
                "request body is not valid msgpack", details={"field": "body", "reason": str(exc)[:200]}
            ) from None
        if _MSGPACK_SUSPECT.search(data):
            check_value(value)
        return value


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()

_BY_TYPE: Final[dict[str, Codec]] = {
    "application/json": JSON,
    "application/msgpack": MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}


def codec_for(headers: dict[str, str] | None) -> Codec:
    """The codec a request asks for; JSON when it names none, InvalidRequestError when unknown."""
    if not headers:
        return JSON
    ctype = headers.get(CONTENT_TYPE_HEADER) or headers.get("content-type")
    if not ctype:
        return JSON
    codec = _BY_TYPE.get(ctype.split(";", 1)[0].strip().lower())
    if codec is None:
        raise InvalidRequestError(
            f"unsupported Content-Type {ctype!r}",
            details={"field": "Content-Type", "reason": "use application/json or application/msgpack"},
        )
    return codec
