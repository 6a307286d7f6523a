"""Every subject and JetStream name the gateway uses. Nothing else spells a subject.

API requests: ``<prefix>.api.<store>.<service>.<op>`` (store ``_`` for store-less ops).
Event log:    ``<prefix>.log.<store>.e.<stream token>`` in the JetStream stream ``<prefix>-log-<store>``.
Index:        ``<prefix>.ix.<store>.<kind>.<token>`` in the stream ``<prefix>-ix-<store>``.

The log lives under its own root so NATS permissions can let clients call ``<prefix>.api.>``
without letting them write to the log (SPEC.md §2).

Stream ids are arbitrary UTF-8 (dots, ``*``, ``>``, spaces, ``$``, unicode); each becomes exactly
one subject token: bytes in ``[A-Za-z0-9_-]`` stay as they are and every other byte becomes
``%XX`` (upper-case hex). The mapping is injective (``%`` itself is escaped), so no stream id can
name another stream's subject, and ids like ``orders-42`` stay readable in ``nats`` tooling.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

from esdb_gater.shared.core.errors import InvalidRequestError

__all__ = [
    "MAX_STREAM_ID_BYTES",
    "PREFIX_RE",
    "STORE_RE",
    "SYSTEM_ROOT",
    "ControlSubject",
    "Subjects",
    "decode_token",
    "encode_token",
    "kv_token",
]

STORE_RE: Final = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
PREFIX_RE: Final = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")
MAX_STREAM_ID_BYTES: Final = 256

_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]+")
_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE: Final = tuple(chr(b) if b in _SAFE else f"%{b:02X}" for b in range(256))
# NATS's own subjects ($JS, $KV, $O, $SYS, $SRV, $MQTT, ...) all start their first token with '$'
# Headers of a subscription delivery (docs/api/subscription.md) and of a channel message
# (docs/api/channel.md): spelled here only; the services write them, the client reads them.
H_SUBSCRIPTION: Final = "Esdb-Subscription"
H_SUBSCRIPTION_KEY: Final = "Esdb-Subscription-Key"
H_STREAM_ID: Final = "Esdb-Stream-Id"
H_EVENT_VERSION: Final = "Esdb-Version"
H_POSITION: Final = "Esdb-Position"
H_DELIVERY_ATTEMPT: Final = "Esdb-Delivery-Attempt"
# a batch delivery (docs/api/subscription.md#batches): how many events, first and last position
H_BATCH_COUNT: Final = "Esdb-Batch-Count"
H_BATCH_FIRST_POSITION: Final = "Esdb-Batch-First-Position"
H_BATCH_LAST_POSITION: Final = "Esdb-Batch-Last-Position"
H_CHANNEL_SEQ: Final = "Esdb-Seq"

SYSTEM_ROOT: Final = "$"
MAX_TARGET_BYTES: Final = 512
# printable ASCII without space: what a client-named target subject may hold
_TARGET_RE: Final = re.compile(r"\A[!-~]+\Z")


class ControlSubject(NamedTuple):
    """A parsed subscription control subject (``Subjects.parse_control``): ``kind`` is
    ``native_ack`` (nonce, seq, version), ``batch_ack`` (nonce, seq = batch number),
    ``parked_ack`` (nonce, seq), ``ack`` or ``replay``."""

    kind: Literal["native_ack", "batch_ack", "parked_ack", "ack", "replay"]
    nonce: str = ""
    seq: int = 0
    version: int = 0


def encode_token(value: str) -> str:
    """One subject token for an arbitrary UTF-8 string (injective, readable for plain ids)."""
    if _PLAIN.fullmatch(value):
        return value
    return "".join(_ESCAPE[b] for b in value.encode("utf-8"))


def kv_token(value: str) -> str:
    """One KV key token for an arbitrary UTF-8 string: ``encode_token`` with ``=`` in place of
    ``%`` (KV keys allow ``[-/_=.A-Za-z0-9]``, not ``%``). ``encode_token`` never emits ``=``, so
    this stays injective, and the token never holds the ``.`` that separates key tokens."""
    return encode_token(value).replace("%", "=")


def decode_token(token: str) -> str:
    """Inverse of ``encode_token``."""
    if "%" not in token:
        return token
    out = bytearray()
    i = 0
    n = len(token)
    while i < n:
        c = token[i]
        if c == "%":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(c))
            i += 1
    return out.decode("utf-8")


class Subjects:
    """Subject builders for one prefix (``esdb`` by default)."""

    def __init__(self, prefix: str = "esdb") -> None:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"invalid subject prefix {prefix!r}")
        self.prefix = prefix

    # --- API ------------------------------------------------------------------------------
    def api(self, store: str, service: str, op: str) -> str:
        return f"{self.prefix}.api.{store}.{service}.{op}"

    def api_endpoint(self, service: str, op: str) -> str:
        """The subscription subject of an endpoint: any store."""
        return f"{self.prefix}.api.*.{service}.{op}"

    def internal(self, store: str, service: str, op: str) -> str:
        """A services-only request subject, ``<prefix>.internal.<store>.<service>.<op>``: outside
        ``<prefix>.api.>``, so the clients' NATS permission (and a tenant account's imports)
        never reach it (docs/adr/0016-reserved-streams-and-quotas.md). The link service writes
        its ``$link:`` streams through it."""
        return f"{self.prefix}.internal.{store}.{service}.{op}"

    def internal_endpoint(self, service: str, op: str) -> str:
        """The subscription subject of an internal endpoint: any store."""
        return f"{self.prefix}.internal.*.{service}.{op}"

    # --- client-named subjects (issue 10, docs/adr/0013-reply-and-target-subjects.md) -----------
    def is_reserved(self, subject: str) -> bool:
        """True for a subject in the gateway's own space (``<prefix>.`` and so every root the
        builders of this class make: api, log, ix, dlq, ch, chlog, chrate, chreplay, ...) or in
        NATS's system space (first token starting with ``$``: ``$JS``, ``$KV``, ``$O``, ``$SYS``,
        ``$SRV``). ``tests/unit/test_subjects_reserved.py`` checks every builder against it."""
        return subject == self.prefix or subject.startswith(self.prefix + ".") or subject.startswith(SYSTEM_ROOT)

    def target_problem(self, subject: str, allow: Sequence[str] | None = None) -> str | None:
        """Why ``subject`` may not be a delivery target a client names (``subscriber``, a
        channel ``deliver_to``), or None when it may: it must be a literal subject (printable
        ASCII, no empty token, no ``*``/``>``), outside the reserved space, and, when ``allow``
        lists prefixes, start with one of them."""
        if not subject or len(subject) > MAX_TARGET_BYTES or not _TARGET_RE.match(subject):
            return "malformed"
        if self.is_reserved(subject):
            return "reserved"
        if "*" in subject or ">" in subject:
            return "wildcard"
        if any(t == "" for t in subject.split(".")):
            return "malformed"
        if allow is not None and not any(subject.startswith(p) for p in allow):
            return "not_allowed"
        return None

    def check_target(self, subject: str, field: str, allow: Sequence[str] | None = None) -> str:
        """``subject`` if it may be a client-named target, else ``InvalidRequestError`` with
        ``details.field`` and ``details.reason`` (malformed, wildcard, reserved, not_allowed)."""
        reason = self.target_problem(subject, allow)
        if reason is None:
            return subject
        texts = {
            "malformed": "must be a literal NATS subject of printable ASCII with no empty token",
            "wildcard": "must not contain the wildcards '*' or '>'",
            "reserved": f"must not be in the gateway's subject space ({self.prefix}.>) or a system one ($...)",
            "not_allowed": f"must start with one of the store's allowed prefixes {list(allow or [])}",
        }
        raise InvalidRequestError(f"{field} {texts[reason]}", details={"field": field, "reason": reason})

    def store_of(self, subject: str) -> str:
        """The store token of an API request subject."""
        parts = subject.split(".")
        return parts[2] if len(parts) > 2 else ""

    # --- event log --------------------------------------------------------------------------
    def log_stream(self, store: str) -> str:
        return f"{self.prefix}-log-{store}"

    def log_root(self, store: str) -> str:
        return f"{self.prefix}.log.{store}"

    def log_all(self, store: str) -> str:
        """Filter matching every event stream of a store."""
        return f"{self.prefix}.log.{store}.e.*"

    def log_subject(self, store: str, stream_id: str) -> str:
        return f"{self.prefix}.log.{store}.e.{encode_token(stream_id)}"

    def log_checkpoint(self, store: str, name: str) -> str:
        """A checkpoint written by ``stream.append_multi`` (docs/adr/0023-multi-stream-append-and-read-all.md):
        in the log stream, outside ``.e.``, so no stream id can name it and event readers never see it."""
        return f"{self.prefix}.log.{store}.c.{encode_token(name)}"

    def stream_id_of(self, subject: str) -> str:
        """The stream id of a log subject; ``ValueError`` when its last token is not one that
        ``encode_token`` makes (a message someone else published into the log)."""
        token = subject.rsplit(".", 1)[-1]
        stream_id = decode_token(token)  # ValueError (UnicodeDecodeError too) on a bad escape
        if encode_token(stream_id) != token:
            raise ValueError(f"{token!r} is not a stream id token")
        return stream_id

    # --- indexes ----------------------------------------------------------------------------
    def index_stream(self, store: str) -> str:
        return f"{self.prefix}-ix-{store}"

    def index_root(self, store: str) -> str:
        return f"{self.prefix}.ix.{store}"

    def index_event_id(self, store: str, event_id: str) -> str:
        return f"{self.prefix}.ix.{store}.id.{encode_token(event_id)}"

    def index_checkpoint(self, store: str) -> str:
        """The event-id index's checkpoint: every commit at or below the log sequence it holds
        is indexed (ADR 0017). Not under ``.id.``, so no event id can name it."""
        return f"{self.prefix}.ix.{store}.ck.id"

    def index_cause(self, store: str, causation_id: str, event_id: str | None = None) -> str:
        """Causation index (docs/adr/0012-causation-index.md): one subject per (cause, effect);
        ``event_id`` None gives the wildcard over every effect of the cause."""
        tail = "*" if event_id is None else encode_token(event_id)
        return f"{self.prefix}.ix.{store}.cause.{encode_token(causation_id)}.{tail}"

    def index_corr(self, store: str, correlation_id: str, event_id: str | None = None) -> str:
        """Correlation index: one subject per (correlation id, event); None = every event."""
        tail = "*" if event_id is None else encode_token(event_id)
        return f"{self.prefix}.ix.{store}.corr.{encode_token(correlation_id)}.{tail}"

    # --- links, scavenger, causation, health (issue 7) ------------------------------------
    def links_bucket(self) -> str:
        """KV bucket of every store's link definitions, progress and driving leases (ADR 0010)."""
        return f"{self.prefix}-links"

    def scavenger_bucket(self) -> str:
        """KV bucket of every store's retention policies and the scheduler's lease (ADR 0011)."""
        return f"{self.prefix}-scavenger"

    def security_bucket(self) -> str:
        """KV bucket holding the services' shared Ed25519 key, when no ``security.service_key_file``
        is configured (shared/security/authz.py, docs/adr/0015-capabilities-on-every-service.md)."""
        return f"{self.prefix}-security"

    def archive_bucket(self, store: str) -> str:
        """Object Store bucket of a store's scavenge archives (one object per scavenge)."""
        return f"{self.prefix}-archive-{store}"

    def log_stream_prefix(self) -> str:
        """The common start of every store's log stream name (``<prefix>-log-<store>``)."""
        return f"{self.prefix}-log-"

    @staticmethod
    def srv_ping(service: str | None = None) -> str:
        """ADR-32 discovery: ``$SRV.PING`` (every service) or ``$SRV.PING.<name>``."""
        return "$SRV.PING" if service is None else f"$SRV.PING.{service}"

    # --- snapshots and schemas (KV buckets and an object store per store) --------------------
    def snapshot_bucket(self, store: str) -> str:
        """KV bucket of a store's snapshots (docs/adr/0005-snapshots.md)."""
        return f"{self.prefix}-snap-{store}"

    def snapshot_objects(self, store: str) -> str:
        """Object Store bucket of a store's snapshots larger than one message."""
        return f"{self.prefix}-snapobj-{store}"

    def schema_bucket(self, store: str) -> str:
        """KV bucket of a store's event schemas (docs/adr/0006-schema-registry-and-upcasting.md)."""
        return f"{self.prefix}-schema-{store}"

    @staticmethod
    def kv_stream(bucket: str) -> str:
        return f"KV_{bucket}"

    @staticmethod
    def kv_subject(bucket: str, key: str) -> str:
        """The subject of a KV key (``>`` for every key of the bucket)."""
        return f"$KV.{bucket}.{key}"

    @staticmethod
    def obj_stream(bucket: str) -> str:
        return f"OBJ_{bucket}"

    @staticmethod
    def obj_chunks(bucket: str, nuid: str) -> str:
        """The chunk subject of one object (ADR-20)."""
        return f"$O.{bucket}.C.{nuid}"

    @staticmethod
    def obj_all(bucket: str) -> list[str]:
        """The subjects of an Object Store bucket's stream: chunks and metas (ADR-20)."""
        return [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"]

    @staticmethod
    def obj_meta(bucket: str, name: str) -> str:
        """The meta subject of one object: its name in padded URL-safe base64 (ADR-20)."""
        return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode('utf-8')).decode('ascii')}"

    # --- subscriptions ----------------------------------------------------------------------
    def subscriptions_bucket(self) -> str:
        """KV bucket holding every store's subscription definitions and delivery leases."""
        return f"{self.prefix}-subscriptions"

    def subscription_control(self, store: str, key: str) -> str:
        """Root of the subjects of the instance delivering a subscription (``.>`` below it):
        ``.ack`` (forwarded ack_event), ``.replay`` (replay_parked), ``.n.<nonce>.<seq>.<version>``
        (native acks on deliveries), ``.b.<nonce>.<batch>`` (native acks on batch deliveries) and
        ``.p.<nonce>.<seq>`` (native acks on replayed parked events). Under ``<prefix>.api.>``,
        so the clients' API permission covers native acks."""
        return f"{self.prefix}.api.{store}.subscription.ctl.{key}"

    def subscription_control_all(self, store: str, key: str) -> str:
        """Every control subject of a subscription (what its delivering instance listens on)."""
        return f"{self.subscription_control(store, key)}.>"

    def subscription_ack(self, store: str, key: str) -> str:
        """A forwarded ack_event, to the instance delivering the subscription."""
        return f"{self.subscription_control(store, key)}.ack"

    def subscription_replay(self, store: str, key: str) -> str:
        """A forwarded replay_parked."""
        return f"{self.subscription_control(store, key)}.replay"

    def subscription_native_ack(self, store: str, key: str, nonce: str, seq: int, version: int) -> str:
        """The reply subject of a delivery: the subscriber's ack (or ``-NAK``) of one event."""
        return f"{self.subscription_control(store, key)}.n.{nonce}.{seq}.{version}"

    def subscription_batch_ack(self, store: str, key: str, nonce: str, batch: int) -> str:
        """The reply subject of a batch delivery: the subscriber's ack (or ``-NAK``) of all its events."""
        return f"{self.subscription_control(store, key)}.b.{nonce}.{batch}"

    def subscription_parked_ack(self, store: str, key: str, nonce: str, seq: int) -> str:
        """The reply subject of a replayed parked event (``seq``: its parked-stream sequence)."""
        return f"{self.subscription_control(store, key)}.p.{nonce}.{seq}"

    def parse_subscription_control(self, store: str, key: str, subject: str) -> ControlSubject | None:
        """What a control subject of the subscription is; None for any other subject or shape
        (a sequence or version that is not a number included)."""
        root = self.subscription_control(store, key) + "."
        tail = subject[len(root) :].split(".") if subject.startswith(root) else []
        try:
            if len(tail) == 4 and tail[0] == "n":
                return ControlSubject("native_ack", tail[1], int(tail[2]), int(tail[3]))
            if len(tail) == 3 and tail[0] == "p":
                return ControlSubject("parked_ack", tail[1], int(tail[2]))
            if len(tail) == 3 and tail[0] == "b":
                return ControlSubject("batch_ack", tail[1], int(tail[2]))
        except ValueError:
            return None
        if tail == ["ack"]:
            return ControlSubject("ack")
        if tail == ["replay"]:
            return ControlSubject("replay")
        return None

    def dlq_stream(self, store: str) -> str:
        return f"{self.prefix}-dlq-{store}"

    def dlq_root(self, store: str) -> str:
        return f"{self.prefix}.dlq.{store}"

    def dlq_subject(self, store: str, key: str) -> str:
        """Parked events of one subscription."""
        return f"{self.prefix}.dlq.{store}.{key}"

    # --- channels (SPEC.md §9, docs/api/channel.md) --------------------------------------------
    def channel(self, channel: str, topic: str) -> str:
        """Delivery subject of a channel message, ``<prefix>.ch.<channel>.<topic tokens>``. Only
        the channel service publishes here (nats/permissions.conf); subscribers may put NATS
        wildcards in ``topic`` (``user.*``, ``>``)."""
        return f"{self.prefix}.ch.{channel}.{topic}"

    def channel_log_stream(self) -> str:
        """The JetStream stream keeping the durable channels' messages (alerts, security)."""
        return f"{self.prefix}-chlog"

    def channel_log(self, channel: str, topic: str) -> str:
        """Where a durable channel's message is stored (``topic`` may be a wildcard filter)."""
        return f"{self.prefix}.chlog.{channel}.{topic}"

    def channel_log_all(self) -> str:
        return f"{self.prefix}.chlog.>"

    def channel_rate_stream(self) -> str:
        """Counter stream of the per-topic, per-second rate limits shared by channel instances."""
        return f"{self.prefix}-chrate"

    def channel_rate(self, channel: str, second: int, topic: str) -> str:
        return f"{self.prefix}.chrate.{channel}.{second}.{topic}"

    def channel_rate_all(self) -> str:
        return f"{self.prefix}.chrate.>"

    def channel_replay_stream(self) -> str:
        """Stream whose message-id de-duplication remembers the HMAC signatures already accepted."""
        return f"{self.prefix}-chreplay"

    def channel_replay(self) -> str:
        return f"{self.prefix}.chreplay"

    def channel_subs_bucket(self) -> str:
        """KV bucket of the subscribe-with-token forwardings, watched by every channel instance."""
        return f"{self.prefix}-chsubs"
