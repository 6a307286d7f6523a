"""Pieces shared by every service's wire models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from esdb_gater.shared.core.subjects import MAX_STREAM_ID_BYTES

__all__ = ["OkResponse", "Request", "Response", "StreamId"]


# Request models validate strictly (issue 14): a value must have the type the published JSON
# Schema gives it (docs/api/schemas/), so ``"count": "10"``, ``"raw": 1`` or ``"max_age": "5"`` are
# ``invalid_request`` instead of being coerced. An integer may stand for a float; nothing else is
# converted. The wire has no types that strict mode would refuse by mistake: the codecs produce
# lists, dicts, str, int, float, bool, None (and bytes in msgpack, where the model asks for bytes).
# Nested models that are not Requests (schema.py's steps, SchemaDef, UpcastEvent) set strict too.


class Request(BaseModel):
    """Base of request models: unknown fields are rejected, so a typo such as
    ``expected_verison`` is an ``invalid_request`` instead of a silent default; values are
    checked strictly against their type (see above)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


def _check_stream_id(value: str) -> str:
    n = len(value.encode("utf-8", "surrogatepass"))
    if n == 0:
        raise ValueError("stream_id must not be empty")
    if n > MAX_STREAM_ID_BYTES:
        raise ValueError(f"stream_id is {n} bytes; at most {MAX_STREAM_ID_BYTES}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("stream_id must be valid UTF-8") from None
    return value


StreamId = Annotated[str, AfterValidator(_check_stream_id)]


class Response(BaseModel):
    """Base of reply models. ``to_wire`` is what the endpoint encodes; replies that carry many
    records built from our own storage override it to skip a second model pass."""

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


class OkResponse(Response):
    ok: bool = True
