"""Wire models of the channel service (SPEC.md §9, docs/api/channel.md).

Subjects: ``<prefix>.api._.channel.{publish,subscribe,unsubscribe,history,list}``; messages are
delivered on ``<prefix>.ch.<channel>.<topic tokens>`` as ``Delivery``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from esdb_gater.shared.models.common import Request, Response

__all__ = [
    "CHANNEL_RE",
    "TOPIC_TOKEN_RE",
    "ChannelInfo",
    "ChannelMessage",
    "ChannelName",
    "ChannelsRequest",
    "ChannelsResponse",
    "Delivery",
    "HistoryRequest",
    "HistoryResponse",
    "PublishRequest",
    "PublishResponse",
    "SubscribeRequest",
    "SubscribeResponse",
    "Topic",
    "TopicPattern",
    "UnsubscribeRequest",
    "check_topic",
]

CHANNEL_RE: Final = re.compile(r"\A[a-z0-9_-]{1,32}\Z")
TOPIC_TOKEN_RE: Final = re.compile(r"\A[A-Za-z0-9_:=+@~-]{1,64}\Z")
MAX_TOPIC_TOKENS: Final = 16
MAX_TOPIC_CHARS: Final = 255
_DELIVER_RE: Final = re.compile(r"\A[!-~]{1,256}\Z")  # printable ASCII, no spaces

Priority = Literal["critical", "high", "normal", "low"]
# a topic without wildcards, as check_topic accepts it (its loop gives the precise error)
_TOPIC_RE: Final = re.compile(r"\A[A-Za-z0-9_:=+@~-]{1,64}(?:\.[A-Za-z0-9_:=+@~-]{1,64}){0,15}\Z")


def check_topic(value: str, *, wildcards: bool) -> str:
    """A topic is 1 to 16 dot-separated tokens of ``[A-Za-z0-9_:=+@~-]``; a subscription may use
    ``*`` for one token and ``>`` as the last token (NATS wildcards)."""
    if len(value) <= MAX_TOPIC_CHARS and _TOPIC_RE.match(value):  # the common case in one match
        return value
    if not value or len(value) > MAX_TOPIC_CHARS:
        raise ValueError(f"topic must be 1 to {MAX_TOPIC_CHARS} characters")
    tokens = value.split(".")
    if len(tokens) > MAX_TOPIC_TOKENS:
        raise ValueError(f"topic has more than {MAX_TOPIC_TOKENS} tokens")
    for i, tok in enumerate(tokens):
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if not TOPIC_TOKEN_RE.match(tok):
            hint = " ('*' and a final '>' only when subscribing)" if tok in ("*", ">") else ""
            raise ValueError(f"topic token {tok!r} must match [A-Za-z0-9_:=+@~-]{{1,64}}{hint}")
    return value


def _channel(value: str) -> str:
    if not CHANNEL_RE.match(value):
        raise ValueError("channel must match [a-z0-9_-]{1,32}")
    return value


def _deliver_to(value: str) -> str:
    if not _DELIVER_RE.match(value) or any(not t or t in ("*", ">") for t in value.split(".")):
        raise ValueError("deliver_to must be a literal NATS subject (no spaces, wildcards or empty tokens)")
    return value


_TOK = r"[A-Za-z0-9_:=+@~-]{1,64}"
_WTOK = r"(?:[A-Za-z0-9_:=+@~-]{1,64}|\*)"
ChannelName = Annotated[str, AfterValidator(_channel), Field(json_schema_extra={"pattern": "^[a-z0-9_-]{1,32}$"})]
Topic = Annotated[
    str,
    AfterValidator(lambda v: check_topic(v, wildcards=False)),
    Field(json_schema_extra={"pattern": f"^{_TOK}(\\.{_TOK}){{0,15}}$", "maxLength": MAX_TOPIC_CHARS}),
]
TopicPattern = Annotated[
    str,
    AfterValidator(lambda v: check_topic(v, wildcards=True)),
    Field(
        json_schema_extra={
            "pattern": f"^(>|{_WTOK}(\\.{_WTOK}){{0,15}}(\\.>)?)$",
            "maxLength": MAX_TOPIC_CHARS,
        }
    ),
]
Token = Annotated[str, Field(min_length=1, max_length=32768)]
DeliverTo = Annotated[str, AfterValidator(_deliver_to)]


class PublishRequest(Request):
    """``publish(channel, topic, message[, capability_token])``."""

    channel: ChannelName = Field(description="one of the configured channels (`channel.list`)")
    topic: Topic = Field(description="dot-separated tokens, e.g. `user.created`; becomes the subject's tail")
    message: Any = Field(description="any JSON value; signed messages are objects with `signature` and `signed_at`")
    capability_token: Token | None = Field(default=None, description="a UCAN JWT granting `channel/publish`")


class PublishResponse(Response):
    model_config = ConfigDict(frozen=True)  # the service answers every non-durable publish with one instance

    ok: bool = True
    seq: int | None = Field(default=None, description="the message's position in the channel history (durable)")

    def to_wire(self) -> dict[str, Any]:
        return {"ok": self.ok, "seq": self.seq}  # what model_dump gives, without the model pass


class SubscribeRequest(Request):
    """Have the service forward a channel's messages to your own subject (an inbox)."""

    channel: ChannelName
    topic: TopicPattern = Field(description="a topic, or a pattern with `*` / a final `>`")
    deliver_to: DeliverTo = Field(description="a literal subject under an allowed prefix (default `_INBOX.`)")
    capability_token: Token | None = Field(default=None, description="a UCAN JWT granting `channel/subscribe`")


class SubscribeResponse(Response):
    id: str = Field(description="pass to `channel.unsubscribe`")
    subject: str = Field(description="the delivery subject pattern this forwarding mirrors")
    expires_at: int = Field(description="Unix ms after which forwarding stops (token expiry or the maximum TTL)")


class UnsubscribeRequest(Request):
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    capability_token: Token | None = Field(
        default=None, description="a token of the forwarding's creator, or one granting `store/admin` on the store `_`"
    )


class HistoryRequest(Request):
    """Messages a durable channel kept, after a position: how a subscriber catches up."""

    channel: ChannelName
    topic: TopicPattern = Field(default=">", description="a topic or pattern")
    after_seq: int = Field(default=0, ge=0, description="the last `seq` you saw (0 = from the oldest kept)")
    limit: int = Field(default=100, ge=1, le=1000)
    capability_token: Token | None = None


class ChannelMessage(BaseModel):
    seq: int = Field(description="position in the channel history")
    channel: str
    topic: str
    message: Any
    published_at: int = Field(description="Unix ms when the service stored it")


class HistoryResponse(Response):
    messages: list[ChannelMessage]
    last_seq: int = Field(description="`seq` of the last message returned, or `after_seq` when none")
    more: bool = Field(description="true when more messages match after `last_seq`")


class ChannelsRequest(Request):
    pass


class ChannelInfo(BaseModel):
    name: str
    priority: Priority
    rate_limit: int | None = Field(description="messages per second per topic; null = unlimited")
    hmac: Literal["required", "optional"]
    capability_mode: Literal["disabled", "optional", "required"]
    durable: bool = Field(description="JetStream-backed: `channel.history` returns what a subscriber missed")


class ChannelsResponse(Response):
    channels: list[ChannelInfo]


class Delivery(BaseModel):
    """The body of every message on ``<prefix>.ch.<channel>.<topic>`` (JSON). Durable channels
    add the header ``Esdb-Seq``."""

    channel: str
    topic: str
    message: Any
