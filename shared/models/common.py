"""Pieces shared by every service's wire models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from shared.subjects import MAX_STREAM_ID_BYTES

__all__ = ["OkResponse", "Request", "Response", "StreamId"]


class Request(BaseModel):
    """Base of request models: unknown fields are rejected, so a typo such as
    ``expected_verison`` is an ``invalid_request`` instead of a silent default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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
