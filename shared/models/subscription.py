"""Wire models of the subscription service (``<prefix>.api.<store>.subscription.<op>``), SPEC.md §4.

Field names are the seed's arguments: ``save_subscription(store, type, selector, name,
start_from, subscriber)``, ``remove_subscription(store, type, selector, name)``,
``ack_event(store, stream_id, subscription_name, event_number)``, ``get_subscriptions(store)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from esdb_gater.shared.models.common import Request, Response, StreamId

__all__ = [
    "AckRequest",
    "GetRequest",
    "ListRequest",
    "ReplayParkedRequest",
    "ReplayParkedResponse",
    "SaveRequest",
    "SubscriptionInfo",
    "SubscriptionKeyRequest",
    "SubscriptionType",
    "SubscriptionsResponse",
]

SubscriptionType = Literal["stream", "event_type", "event_pattern", "event_payload", "tags"]

_SUBJECT_FORBIDDEN = (" ", "\t", "\r", "\n")


class SaveRequest(Request):
    """Create a persistent subscription (``save_subscription``)."""

    type: SubscriptionType
    selector: Any = Field(
        description="stream: a stream id or '$all'; event_type: a type; event_pattern: a stream-id "
        "pattern with '*' (any run of characters); event_payload: an object that `data` must contain; "
        "tags: a list of tags (any of)"
    )
    name: str = Field(min_length=1, max_length=256)
    start_from: Any = Field(
        default="start",
        description="'start', 'end', an integer (a version for type stream, else a position), "
        "or {'version': N} / {'position': P} / {'timestamp': epoch_us}",
    )
    subscriber: str = Field(min_length=1, max_length=512, description="NATS subject events are delivered to")
    max_in_flight: int = Field(default=256, ge=1, le=10_000, description="unacknowledged appends in flight")
    ack_wait_ms: int = Field(default=30_000, ge=100, le=3_600_000)
    max_deliver: int = Field(default=5, ge=1, le=100, description="attempts before an event is parked")
    backoff_ms: list[int] | None = Field(
        default=None, description="delays between attempts; default: ack_wait_ms each time"
    )
    codec: Literal["json", "msgpack"] = "json"
    delivery: Literal["event", "batch"] = Field(
        default="event",
        description="event: one message per event; batch: one message carrying up to batch_max events "
        "(body {'events': [...]}, one reply acks them all)",
    )
    batch_max: int = Field(default=100, ge=1, le=1000, description="events per batch message (delivery batch)")
    ack: Literal["each", "cumulative"] = Field(
        default="each",
        description="each: a native ack acks that event (or batch); cumulative: it also acks every event "
        "delivered before it (at a lower position)",
    )

    @field_validator("subscriber")
    @classmethod
    def _subject(cls, v: str) -> str:
        tokens = v.split(".")
        if (
            any(c in v for c in _SUBJECT_FORBIDDEN)
            or any(t == "" for t in tokens)
            or any(t in ("*", ">") for t in tokens)
        ):
            raise ValueError("subscriber must be a literal NATS subject (no spaces, wildcards or empty tokens)")
        return v

    @field_validator("backoff_ms")
    @classmethod
    def _backoff(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(v) > 20 or any(d < 100 or d > 3_600_000 for d in v)):
            raise ValueError("backoff_ms: 1 to 20 delays, each 100 ms to 1 h")
        return v

    @model_validator(mode="after")
    def _selector(self) -> SaveRequest:
        sel = self.selector
        if self.type in ("stream", "event_type", "event_pattern"):
            if not isinstance(sel, str) or not sel or len(sel.encode("utf-8", "surrogatepass")) > 256:
                raise ValueError(f"selector of a {self.type} subscription must be a non-empty string")
        elif self.type == "event_payload":
            if not isinstance(sel, dict) or not sel:
                raise ValueError("selector of an event_payload subscription must be a non-empty object")
        elif not isinstance(sel, list) or not sel or not all(isinstance(t, str) and t for t in sel):
            raise ValueError("selector of a tags subscription must be a non-empty list of strings")
        sf = self.start_from
        ok = (
            sf in ("start", "end")
            or (isinstance(sf, int) and not isinstance(sf, bool) and sf >= 0)
            or (
                isinstance(sf, dict)
                and len(sf) == 1
                and next(iter(sf)) in ("version", "position", "timestamp")
                and isinstance(next(iter(sf.values())), int)
                and next(iter(sf.values())) >= 0
            )
        )
        if not ok:
            raise ValueError(
                "start_from must be 'start', 'end', an integer >= 0, or {'version'|'position'|'timestamp': int}"
            )
        if isinstance(sf, dict) and "version" in sf and self.type != "stream":
            raise ValueError("start_from.version needs a stream subscription; use position or timestamp")
        return self


class SubscriptionKeyRequest(Request):
    """Names one subscription: (type, selector, name)."""

    type: SubscriptionType
    selector: Any
    name: str = Field(min_length=1, max_length=256)


class GetRequest(Request):
    """``name`` alone finds the first subscription of that name; type and selector narrow it."""

    name: str = Field(min_length=1, max_length=256)
    type: SubscriptionType | None = None
    selector: Any = None


class ReplayParkedRequest(GetRequest):
    pass


class ListRequest(Request):
    pass


class AckRequest(Request):
    stream_id: StreamId
    subscription_name: str = Field(min_length=1, max_length=256)
    event_number: int = Field(ge=0, description="the version of the event in its stream")
    cumulative: bool | None = Field(
        default=None,
        description="also ack every event delivered before this one (lower position); "
        "default: the subscription's ack mode",
    )


class SubscriptionInfo(Response):
    type: SubscriptionType
    selector: Any
    name: str
    key: str = Field(description="stable id of (type, selector, name)")
    subscriber: str
    start_from: Any
    created_at: int = Field(description="ms since epoch")
    checkpoint: int | None = Field(
        description="last acknowledged version (stream subscriptions) or position (others); null before the first ack"
    )
    checkpoint_position: int = Field(description="store position up to which every event is acknowledged")
    lag_events: int = Field(description="appends matching the filter not yet acknowledged")
    lag_seconds: float = Field(description="age of the oldest unacknowledged append")
    parked: int = Field(description="events in the subscription's dead-letter stream")
    max_in_flight: int
    ack_wait_ms: int
    max_deliver: int
    backoff_ms: list[int] | None
    codec: str
    active: bool = Field(description="a service instance is delivering it right now")
    delivery: Literal["event", "batch"] = Field(default="event", description="as saved; omitted when 'event'")
    batch_max: int = Field(default=100, description="as saved; present with delivery 'batch'")
    ack: Literal["each", "cumulative"] = Field(default="each", description="as saved; omitted when 'each'")

    def to_wire(self) -> dict[str, Any]:
        """Without the delivery options left at their defaults: replies stay as before them."""
        out = self.model_dump(mode="python")
        if self.delivery == "event":
            del out["delivery"], out["batch_max"]
        if self.ack == "each":
            del out["ack"]
        return out


class SubscriptionsResponse(Response):
    subscriptions: list[SubscriptionInfo]

    def to_wire(self) -> dict[str, Any]:
        return {"subscriptions": [s.to_wire() for s in self.subscriptions]}


class ReplayParkedResponse(BaseModel):
    replayed: int = Field(description="parked events sent to the subscriber again")
