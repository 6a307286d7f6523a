"""Body codecs, chosen by the request's ``Content-Type`` header (SPEC.md §2).

JSON is the default so ``nats req`` works; ``Content-Type: application/msgpack`` selects
msgpack, and the reply is sent in the codec of the request. Bytes (binary event data) travel as
msgpack ``bin`` and, in JSON, as base64 strings: the JSON encoder turns ``bytes`` into base64 and
the models turn base64 back into bytes where the content type says the value is binary.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final, Protocol

import msgpack

from shared.errors import InvalidRequestError

__all__ = ["CONTENT_TYPE_HEADER", "JSON", "MSGPACK", "Codec", "codec_for"]

CONTENT_TYPE_HEADER: Final = "Content-Type"


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


class JsonCodec:
    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()

    def decode(self, data: bytes) -> Any:
        if not data:
            return {}
        try:
            return json.loads(data, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, huge int literals
            raise InvalidRequestError(
                "request body is not valid JSON", details={"field": "body", "reason": str(exc)}
            ) from None
        except RecursionError:
            raise InvalidRequestError(
                "request body nests too deeply", details={"field": "body", "reason": "nesting"}
            ) from None


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
            return msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=2, ext_hook=_reject_ext)
        except Exception as exc:  # msgpack raises many unrelated types for bad input
            raise InvalidRequestError(
                "request body is not valid msgpack", details={"field": "body", "reason": str(exc)[:200]}
            ) from None


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
