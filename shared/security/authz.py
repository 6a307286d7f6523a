"""Capability tokens on every service (docs/security.md, docs/adr/0015-capabilities-on-every-service.md).

Three parts:

* **The table** (``TABLE``): every op of every service, keyed ``"<subject token>.<op>"``
  (``stream.append``, ``store.create``, ``memory.level``…), maps to exactly one ``Rule``: a
  resource template and an action. The template's ``{field}`` names come from the op's
  validated request model; ``{store}`` is the subject's store token and ``{realm}`` the
  setting ``security.realm``. ``tests/unit/test_authz.py`` proves the table covers every op of
  every service in ``services/__init__.py SERVICES`` and nothing else, and that docs/security.md shows
  exactly this table (``markdown_table()``).
* **Enforcement** (``Authz.enforce``), called once per request by ``shared/runtime/endpoint.py`` after
  validation and before the handler. The token comes from the request header
  ``Authorization: Bearer <jwt>``. Modes (``security.capability_mode``): ``disabled`` ignores
  tokens, ``optional`` checks a token when one comes, ``required`` needs one
  (``unauthorized``/``capability_required``). Verified tokens are cached (``Verifier``: a bounded
  LRU keyed by the token string, an entry living no longer than the token), so a hot path does
  not check Ed25519 signatures on every request. Rules marked ``checked_by="channel"`` are left
  to the channel policy (per-channel modes; services/channel/policy.py), which reads the header
  token through ``request_token()``.
* **The service credential** (``ServiceCredential``): calls between services carry
  ``Authorization: Bearer <service token>`` (``service_headers(nc)``). The services share one
  Ed25519 key: ``security.service_key_file`` when set, else a random key kept in the KV bucket
  ``<prefix>-security`` (created by whichever process starts first; the clients' NATS permissions
  never reach ``$KV``/``$JS``). Its DID is a trusted issuer automatically. Each process mints a
  root token (``iss = aud =`` the service DID, or ``aud = security.audience`` when set;
  ``att: esdb://<realm>/* with *``, 15 min) and
  renews it 5 minutes before it expires. ``security.service_token``, when set, is sent instead
  (a token from one of ``trusted_issuers``). ``is_service_call()`` tells a handler whether the
  request it serves carries the service credential.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hmac
import logging
import string
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel

from esdb_gater.shared.security import capability
from esdb_gater.shared.security.capability import Capability, CapabilityError, Identity

if TYPE_CHECKING:
    from esdb_gater.shared.core.settings import SecuritySettings

__all__ = [
    "AUTHORIZATION_HEADER",
    "TABLE",
    "Authz",
    "RequestAuth",
    "Rule",
    "ServiceCredential",
    "Verifier",
    "bearer_headers",
    "control_allowed",
    "current",
    "for_connection",
    "holder_did",
    "is_service_call",
    "load_key",
    "markdown_table",
    "open_authz",
    "register",
    "request_token",
    "service_headers",
]

log = logging.getLogger(__name__)

AUTHORIZATION_HEADER: Final = "Authorization"
BEARER: Final = "Bearer "
SERVICE_TTL_S: Final = 900
SERVICE_RENEW_S: Final = 300
SERVICE_FACT: Final = "esdb.service"
KEY_NAME: Final = "service-key"

STORE: Final = "esdb://{realm}/store/{store}"


@functools.cache
def _template_fields(template: str) -> tuple[str, ...]:
    """Parsed once per template (there are a few dozen), not once per request."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    return tuple(f for f in names if f not in ("realm", "store"))


@dataclass(frozen=True, slots=True)
class Rule:
    """One op's (resource template, action). ``checked_by``: ``endpoint`` (the adapter checks
    it) or ``channel`` (the channel policy does, with the channel's own mode)."""

    template: str
    action: str
    checked_by: Literal["endpoint", "channel"] = "endpoint"
    # a request field holding a list of items (or one item, or null): the template is filled from
    # each item and every resource needs the grant (stream.append_multi: every stream named)
    each: str | None = None
    also: tuple[Rule, ...] = ()  # further rules the same request must pass (each of them)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the template names (not ``realm`` or ``store``): of the request, or of
        each item of ``each``."""
        return _template_fields(self.template)

    def resource(self, realm: str, store: str, request: BaseModel | Mapping[str, Any]) -> str:
        if isinstance(request, BaseModel):
            values = {f: getattr(request, f) for f in self.fields}
        else:
            values = {f: request[f] for f in self.fields}
        return self.template.format(realm=realm, store=store, **{k: str(v) for k, v in values.items()})

    def checks(self, realm: str, store: str, request: BaseModel | Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every (resource, action) the request needs, in order, without repeats."""
        out: list[tuple[str, str]] = []
        for rule in (self, *self.also):
            if rule.each is None:
                items: Any = [request]
            else:
                items = getattr(request, rule.each) if isinstance(request, BaseModel) else request.get(rule.each)
                items = [] if items is None else items if isinstance(items, list) else [items]
            for item in items:
                check = (rule.resource(realm, store, item), rule.action)
                if check not in out:
                    out.append(check)
        return out

    def shown(self) -> str:
        """The template as docs/security.md writes it: ``esdb://<realm>/stream/<store>/<stream_id>``
        (``<appends.stream_id>`` for a field of each item of ``appends``)."""
        text = self.template
        if self.each is not None:
            for f in self.fields:
                text = text.replace(f"{{{f}}}", f"{{{self.each}.{f}}}")
        return text.replace("{", "<").replace("}", ">")


def _r(kind: str, fld: str, action: str, checked_by: Literal["endpoint", "channel"] = "endpoint") -> Rule:
    return Rule(f"esdb://{{realm}}/{kind}/{{store}}/{{{fld}}}", action, checked_by)


def _s(action: str, checked_by: Literal["endpoint", "channel"] = "endpoint") -> Rule:
    return Rule(STORE, action, checked_by)


_CHANNEL: Final = "esdb://{realm}/channel/{channel}/{topic}"

# The one authorization table. Keys: "<subject token>.<op>" (the token is the op's own, e.g.
# "store" for the stream service's store.create). An internal op (Op.internal, on
# <prefix>.internal.>) shares the rule of its public namesake and also needs the service
# credential.
TABLE: Final[dict[str, Rule]] = {
    # stream service
    "stream.append": _r("stream", "stream_id", "stream/append"),
    "stream.read": _r("stream", "stream_id", "stream/read"),
    "stream.forward": _r("stream", "stream_id", "stream/read"),
    "stream.backward": _r("stream", "stream_id", "stream/read"),
    "stream.version": _r("stream", "stream_id", "stream/read"),
    "stream.exists": _r("stream", "stream_id", "stream/read"),
    "stream.read_until": _r("stream", "stream_id", "stream/read"),
    "stream.read_range": _r("stream", "stream_id", "stream/read"),
    "stream.version_at": _r("stream", "stream_id", "stream/read"),
    "stream.delete": _r("stream", "stream_id", "stream/delete"),
    # every stream named needs stream/append, and the checkpoint, when one is written, too
    "stream.append_multi": Rule(
        "esdb://{realm}/stream/{store}/{stream_id}",
        "stream/append",
        each="appends",
        also=(Rule("esdb://{realm}/checkpoint/{store}/{name}", "stream/append", each="checkpoint"),),
    ),
    # every stream's events: stream/read on all of the store's streams (a grant ending in `*`),
    # not store/read, which is the metadata grant (stream.list, store.info)
    "stream.read_all": Rule("esdb://{realm}/stream/{store}/*", "stream/read"),
    "stream.checkpoint": _r("checkpoint", "name", "stream/read"),
    "stream.list": _s("store/read"),
    "store.create": _s("store/admin"),
    "store.info": _s("store/read"),
    "store.reindex": _s("store/admin"),
    # snapshot service (resource: the snapshot's stream_uuid)
    "snapshot.record": _r("snapshot", "stream_uuid", "snapshot/write"),
    "snapshot.read": _r("snapshot", "stream_uuid", "snapshot/read"),
    "snapshot.read_chunk": _r("snapshot", "stream_uuid", "snapshot/read"),
    "snapshot.list": _r("snapshot", "stream_uuid", "snapshot/read"),
    "snapshot.delete": _r("snapshot", "stream_uuid", "snapshot/delete"),
    # subscription service
    "subscription.save": _r("subscription", "name", "subscription/manage"),
    "subscription.remove": _r("subscription", "name", "subscription/manage"),
    "subscription.replay_parked": _r("subscription", "name", "subscription/manage"),
    "subscription.get": _r("subscription", "name", "subscription/read"),
    "subscription.ack": _r("subscription", "subscription_name", "subscription/ack"),
    "subscription.list": _s("subscription/read"),
    # schema service
    "schema.register": _r("schema", "event_type", "schema/write"),
    "schema.unregister": _r("schema", "event_type", "schema/write"),
    "schema.get": _r("schema", "event_type", "schema/read"),
    "schema.list": _s("schema/read"),
    "schema.upcast": _s("schema/read"),
    # link service
    "link.create": _r("link", "name", "link/manage"),
    "link.start": _r("link", "name", "link/manage"),
    "link.stop": _r("link", "name", "link/manage"),
    "link.delete": _r("link", "name", "link/manage"),
    "link.get": _r("link", "name", "link/read"),
    "link.info": _r("link", "name", "link/read"),
    "link.list": _s("link/read"),
    # scavenger service (store-wide)
    "scavenger.scavenge": _s("store/admin"),
    "scavenger.scavenge_matching": _s("store/admin"),
    "scavenger.archive_read": _s("store/admin"),
    "scavenger.policy_set": _s("store/admin"),
    "scavenger.policy_delete": _s("store/admin"),
    "scavenger.dry_run": _s("store/read"),
    "scavenger.policy_get": _s("store/read"),
    "scavenger.policy_list": _s("store/read"),
    # causation service (events of any stream of the store)
    "causation.effects": _s("causation/read"),
    "causation.cause": _s("causation/read"),
    "causation.chain": _s("causation/read"),
    "causation.correlated": _s("causation/read"),
    "causation.graph": _s("causation/read"),
    # channel service (store token "_"); publish/subscribe/history with the channel's own mode
    "channel.publish": Rule(_CHANNEL, "channel/publish", "channel"),
    "channel.subscribe": Rule(_CHANNEL, "channel/subscribe", "channel"),
    "channel.history": Rule(_CHANNEL, "channel/subscribe", "channel"),
    "channel.unsubscribe": _s("store/admin", "channel"),  # or the forwarding's creator
    "channel.list": _s("store/read"),
    # health service (open by default: security.open_services)
    "health.check": _s("health/read"),
    "health.quick": _s("health/read"),
    "memory.level": _s("health/read"),
    "memory.stats": _s("health/read"),
}

NOTES: Final[dict[str, str]] = {
    "stream.append_multi": "every stream named; the checkpoint too, when one is given",
    "channel.publish": "channel's mode",
    "channel.subscribe": "channel's mode",
    "channel.history": "channel's mode",
    "channel.unsubscribe": "the forwarding's creator needs no grant",
    "health.check": "open by default",
    "health.quick": "open by default",
    "memory.level": "open by default",
    "memory.stats": "open by default",
}


def markdown_table() -> str:
    """The table as docs/security.md shows it (between its ``authz-table`` markers)."""
    lines = ["| op | resource | action | note |", "|---|---|---|---|"]
    for key, rule in TABLE.items():
        resources = " and ".join(f"`{r.shown()}`" for r in (rule, *rule.also))
        actions = " and ".join(dict.fromkeys(f"`{r.action}`" for r in (rule, *rule.also)))
        lines.append(f"| `{key}` | {resources} | {actions} | {NOTES.get(key, '')} |")
    return "\n".join(lines)


# --- verification with a cache ---------------------------------------------------------------


class Verifier:
    """``capability.verify`` with a fixed trust configuration and a bounded LRU of verified
    tokens (keyed by the token string; an entry is dropped once the token expires, so a cached
    answer is never more permissive than a fresh one). Failures are not cached."""

    def __init__(
        self,
        trusted_issuers: Sequence[str],
        audience: str | None,
        leeway_s: int,
        *,
        max_entries: int = 4096,
    ) -> None:
        self.trusted_issuers = tuple(dict.fromkeys(trusted_issuers))
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_entries = max_entries
        self._cache: OrderedDict[str, Capability] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def verify(self, token: str, now: float | None = None) -> Capability:
        current = time.time() if now is None else now
        cap = self._cache.get(token)
        if cap is not None:
            if current <= cap.exp + self.leeway_s:
                self._cache.move_to_end(token)
                self.hits += 1
                return cap
            del self._cache[token]
        self.misses += 1
        cap = capability.verify(
            token, trusted_issuers=self.trusted_issuers, audience=self.audience, now=current, leeway_s=self.leeway_s
        )
        self._cache[token] = cap
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return cap

    def __len__(self) -> int:
        return len(self._cache)


def authorize(cap: Capability, resource: str, action: str) -> None:
    """A grant of ``cap`` covering (resource, action), else ``insufficient_permissions``."""
    for g in cap.att:
        if not capability.resource_matches(g.with_, resource):
            continue
        if g.can == "*" or capability.resource_matches(g.can, action):
            return
    raise CapabilityError(
        "insufficient_permissions", f"no grant for {resource} / {action}", resource=resource, action=action
    )


def holder_did(cap: Capability, audience: str | None = None) -> str:
    """Who presents ``cap``: its audience, or, for a token addressed to the service itself
    (``security.audience``: proof of possession), its issuer."""
    if audience is not None and cap.aud == audience:
        return cap.iss
    return cap.aud


def root_issuer(cap: Capability) -> str:
    """The ``iss`` of the chain's root token (the first proof at each level)."""
    while cap.prf:
        cap = capability.decode(cap.prf[0])
    return cap.iss


# --- the service credential ----------------------------------------------------------------


def load_key(path: str | Path) -> bytes:
    """A 32-byte Ed25519 seed from a file: raw bytes, hex or base64 text."""
    import base64
    import binascii

    data = Path(path).read_bytes()
    if len(data) == 32:
        return data
    text = data.strip()
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{path}: not a 32-byte Ed25519 key (raw, hex or base64)") from None
    if len(raw) != 32:
        raise ValueError(f"{path}: an Ed25519 key is 32 bytes, this one is {len(raw)}")
    return raw


@dataclass
class ServiceCredential:
    """The services' own identity and the token they present to each other."""

    identity: Identity
    realm: str
    static_token: str | None = field(default=None, repr=False)
    audience: str | None = None  # security.audience: the minted token is addressed to it
    _token: str | None = field(default=None, repr=False)
    _exp: float = 0.0

    @property
    def did(self) -> str:
        return self.identity.did

    def token(self, now: float | None = None) -> str:
        if self.static_token:
            return self.static_token
        current = time.time() if now is None else now
        if self._token is None or current > self._exp - SERVICE_RENEW_S:
            cap = capability.create(
                self.identity,
                self.audience or self.identity,
                [(f"esdb://{self.realm}/*", "*")],
                ttl_s=SERVICE_TTL_S,
                facts={SERVICE_FACT: True},
                now=int(current),
            )
            self._token = capability.encode(capability.sign(cap, self.identity))
            self._exp = cap.exp
        return self._token

    def headers(self) -> dict[str, str]:
        return bearer_headers(self.token())

    def is_service_token(self, token: str, cap: Capability) -> bool:
        """``cap`` (``token`` verified) is the services' credential: the configured
        ``service_token``, or a chain rooted in the service key."""
        if self.static_token and hmac.compare_digest(token.encode(), self.static_token.encode()):
            return True
        return root_issuer(cap) == self.identity.did


def bearer_headers(token: str | None) -> dict[str, str]:
    return {AUTHORIZATION_HEADER: BEARER + token} if token else {}


def _bearer(headers: Mapping[str, str] | None) -> tuple[str | None, bool]:
    """(token, malformed) from ``Authorization: Bearer <jwt>``."""
    if not headers:
        return None, False
    value = headers.get(AUTHORIZATION_HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None, False
    if value[: len(BEARER)].lower() != BEARER.lower() or not value[len(BEARER) :].strip():
        return None, True
    return value[len(BEARER) :].strip(), False


# --- per request ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestAuth:
    """What the adapter learnt of the current request's credential."""

    token: str | None
    capability: Capability | None
    service: bool


_current: contextvars.ContextVar[RequestAuth | None] = contextvars.ContextVar("esdb_request_auth", default=None)


def current() -> RequestAuth | None:
    return _current.get()


def request_token() -> str | None:
    """The ``Authorization: Bearer`` token of the request being served (None without one)."""
    ra = _current.get()
    return ra.token if ra is not None else None


def is_service_call() -> bool:
    """True when the request being served carries a valid service credential: on internal ops
    in every mode, on public ops when the mode is not ``disabled`` (there the token is not
    verified at all, see ``Authz.enforce``)."""
    ra = _current.get()
    return ra is not None and ra.service


_STRICTNESS: Final = {"disabled": 0, "optional": 1, "required": 2}


def stricter(a: capability.CapabilityMode, b: capability.CapabilityMode) -> capability.CapabilityMode:
    return a if _STRICTNESS[a] >= _STRICTNESS[b] else b


class Authz:
    """The policy of one process: settings, the verifier and the service credential."""

    def __init__(self, settings: SecuritySettings, credential: ServiceCredential | None = None) -> None:
        self.settings = settings
        self.mode: capability.CapabilityMode = settings.capability_mode
        self.realm = settings.realm
        self.credential = credential
        trusted = list(settings.trusted_issuers)
        if credential is not None:
            trusted.append(credential.did)
        self.verifier = Verifier(trusted, settings.audience, settings.capability_leeway_s)
        self.open_services = frozenset(settings.open_services)

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return self.verifier.trusted_issuers

    def _verify_quiet(self, token: str) -> Capability | None:
        try:
            return self.verifier.verify(token)
        except CapabilityError:
            return None

    def begin(self, headers: Mapping[str, str] | None) -> tuple[RequestAuth, CapabilityError | None]:
        """Read and verify the request's token; set it as the current request's credential.
        Returns the verification error (not raised: whether it matters depends on the op)."""
        token, malformed = _bearer(headers)
        err: CapabilityError | None = None
        cap: Capability | None = None
        if malformed:
            err = CapabilityError("parse_error", "the Authorization header must be 'Bearer <token>'")
        elif token is not None:
            try:
                cap = self.verifier.verify(token)
            except CapabilityError as exc:
                err = exc
        service = cap is not None and self.credential is not None and self.credential.is_service_token(token or "", cap)
        ra = RequestAuth(token, cap, service)
        _current.set(ra)
        return ra, err

    def enforce(
        self, key: str, store: str, request: BaseModel, headers: Mapping[str, str] | None, *, internal: bool = False
    ) -> RequestAuth:
        """The check of one request (endpoint.py); raises ``CapabilityError``."""
        if self.mode == "disabled" and not internal:
            # nothing to decide, so no signature is checked: a client sending made-up tokens
            # must not make every request pay an Ed25519 verification (the channel policy still
            # reads the raw token through request_token())
            token, _ = _bearer(headers)
            ra = RequestAuth(token, None, False)
            _current.set(ra)
            return ra
        ra, err = self.begin(headers)
        if internal and not ra.service:
            raise CapabilityError(
                "insufficient_permissions", f"{key} on the internal subject is for the services only", op=key
            )
        if self.mode == "disabled" or ra.service:
            return ra
        rule = TABLE[key]
        if rule.checked_by != "endpoint" or key.split(".", 1)[0] in self.open_services:
            return ra  # the channel policy checks (with its own trust settings), or an open service
        if err is not None:
            raise err
        checks = rule.checks(self.realm, store, request)
        if ra.capability is None:
            if self.mode == "required":
                resource, action = checks[0] if checks else (STORE.format(realm=self.realm, store=store), rule.action)
                raise CapabilityError(
                    "capability_required",
                    f"a capability token is required for {resource}",
                    resource=resource,
                    action=action,
                )
            return ra
        for resource, action in checks:
            authorize(ra.capability, resource, action)
        return ra

    @property
    def table(self) -> Mapping[str, Rule]:
        return TABLE


# --- one Authz per connection (the services of a process share it) ----------------------------

_BY_CONNECTION: weakref.WeakKeyDictionary[Any, Authz] = weakref.WeakKeyDictionary()


def register(nc: Any, authz: Authz) -> None:
    _BY_CONNECTION[nc] = authz


def for_connection(nc: Any) -> Authz | None:
    return _BY_CONNECTION.get(nc)


def service_headers(nc: Any) -> dict[str, str]:
    """``Authorization: Bearer <service token>`` for a call between services over ``nc``
    (empty when no policy was registered for that connection)."""
    authz = _BY_CONNECTION.get(nc)
    if authz is None or authz.credential is None:
        return {}
    return authz.credential.headers()


def control_allowed(nc: Any, headers: Mapping[str, str] | None) -> bool:
    """For a raw (non-endpoint) control subject that only the services should use, such as a
    subscription's forwarded ``ack``/``replay``: True when capabilities are disabled (or no policy
    is registered for ``nc``) or the message carries the service credential."""
    authz = _BY_CONNECTION.get(nc)
    if authz is None or authz.mode == "disabled":
        return True
    token, _ = _bearer(headers)
    if token is None or authz.credential is None:
        return False
    cap = authz._verify_quiet(token)
    return cap is not None and authz.credential.is_service_token(token, cap)


async def _shared_key(nc: Any, bucket: str, within: float = 60.0) -> bytes:
    """The services' key from the KV bucket ``bucket``, made by the first process to start.

    A process may start before JetStream is ready (a cluster still electing its meta leader
    answers with a timeout or 503): keep asking, with backoff, for up to ``within`` seconds."""
    import asyncio

    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import ServiceUnavailableError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.1
    while True:
        try:
            return await _read_or_make_key(nc, bucket)
        except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError) as exc:
            if loop.time() + delay > deadline:
                raise
            log.info("JetStream not ready for the services' key (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _read_or_make_key(nc: Any, bucket: str) -> bytes:
    from nats.js.api import KeyValueConfig
    from nats.js.errors import KeyWrongLastSequenceError

    from esdb_gater.shared.log.jetstream import open_kv

    kv = await open_kv(
        nc.jetstream(), KeyValueConfig(bucket=bucket, history=1, description="esdb-gater: the services' key")
    )
    seed = Identity.generate().private_key
    assert seed is not None
    with contextlib.suppress(KeyWrongLastSequenceError):  # another process made it first: use theirs
        await kv.create(KEY_NAME, seed.hex().encode())
    entry = await kv.get(KEY_NAME)
    return bytes.fromhex(bytes(entry.value).decode("ascii"))


async def open_authz(nc: Any, security: SecuritySettings, bucket: str) -> Authz:
    """The process's policy on ``nc`` (registered for ``service_headers``)."""
    existing = _BY_CONNECTION.get(nc)
    if existing is not None:
        return existing
    if security.service_key_file:
        seed = load_key(security.service_key_file)
    else:
        seed = await _shared_key(nc, bucket)
    static = security.service_token.get_secret_value() if security.service_token is not None else None
    credential = ServiceCredential(
        Identity.from_private_key(seed), security.realm, static_token=static or None, audience=security.audience
    )
    authz = Authz(security, credential)
    register(nc, authz)
    log.info("capability mode %s; services' DID %s", security.capability_mode, credential.did)
    return authz
