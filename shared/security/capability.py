"""Capability tokens: UCAN-style, Ed25519-signed JWTs (SPEC.md §9, docs/adr/0008-capability-tokens.md).

Identities are ``did:key`` DIDs: ``did:key:z`` + base58btc(0xED 0x01 ‖ 32-byte Ed25519 public
key), so an issuer's DID is also its verification key. A token is a standard JWT,
``b64url(header).b64url(payload).b64url(signature)`` without padding, header
``{"alg": "EdDSA", "typ": "JWT", "ucv": "0.8.1"}``, signed with Ed25519 over the JWT signing input
(the first two parts and the dot). The payload::

    {"iss": did, "aud": did, "nbf": s, "exp": s, "iat": s, "nnc": nonce,
     "att": [{"with": "esdb://<realm>/channel/<name>/<topic>", "can": "channel/publish"}, ...],
     "fct": {}, "prf": [<parent token>, ...]}

A ``with`` (resource) or ``can`` (action) ending in ``*`` covers every value with that prefix;
``can: "*"`` is every action. ``delegate`` makes a child token for a new audience whose grants
must be covered by the parent's, whose ``iss`` is the parent's ``aud`` and whose ``exp`` is
clamped to the parent's; the parent token travels in ``prf``. ``verify`` checks the signature,
the time window and the whole proof chain: every link's ``iss`` is its proof's ``aud``, every
grant is covered by the proof, no ``exp`` outlives the proof's, and the root is issued by a
trusted DID. ``authorize`` then looks for a grant covering (resource, action).

Failures raise ``CapabilityError`` (the wire error ``unauthorized``) with ``details.reason``
one of ``expired``, ``not_yet_valid``, ``invalid_signature``, ``insufficient_permissions``,
``parse_error``, ``capability_required``, ``audience_mismatch``, ``untrusted_issuer``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from esdb_gater.shared.core.errors import UnauthorizedError

__all__ = [
    "ACTIONS",
    "Capability",
    "CapabilityError",
    "CapabilityMode",
    "Grant",
    "Identity",
    "authorize",
    "b58decode",
    "b58encode",
    "channel_resource",
    "check",
    "create",
    "decode",
    "delegate",
    "did_from_public_key",
    "encode",
    "grant",
    "is_valid_did",
    "public_key_from_did",
    "resource_matches",
    "sign",
    "stream_resource",
    "verify",
]

CapabilityMode = Literal["disabled", "optional", "required"]

ACTIONS: Final = (
    "stream/append",
    "stream/read",
    "stream/subscribe",
    "stream/delete",
    "channel/publish",
    "channel/subscribe",
    "snapshot/write",
    "snapshot/read",
    "snapshot/delete",
    "subscription/create",
    "subscription/delete",
    "subscription/list",
    # issue 10: every op of every service (shared/authz.TABLE)
    "subscription/manage",
    "subscription/read",
    "subscription/ack",
    "schema/read",
    "schema/write",
    "link/manage",
    "link/read",
    "store/admin",
    "store/read",
    "causation/read",
    "health/read",
    "*",
)

HEADER: Final = {"alg": "EdDSA", "typ": "JWT", "ucv": "0.8.1"}
DEFAULT_TTL_S: Final = 900
MAX_TOKEN_BYTES: Final = 32 * 1024
MAX_CHAIN: Final = 8
ED25519_MULTICODEC: Final = b"\xed\x01"
DID_KEY_PREFIX: Final = "did:key:z"


class CapabilityError(UnauthorizedError):
    """A capability check failed; ``reason`` (also ``details.reason``) says why."""

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, details={"reason": reason, **details})
        self.reason = reason


# --- base58btc and did:key ---------------------------------------------------------------------

_B58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58; each leading zero byte is a leading ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise ValueError(f"invalid base58 character {c!r}")
        n = n * 58 + i
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def did_from_public_key(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return DID_KEY_PREFIX + b58encode(ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> bytes:
    """The Ed25519 public key of a ``did:key``; ValueError for anything else."""
    if not isinstance(did, str) or not did.startswith(DID_KEY_PREFIX) or len(did) > 128:
        raise ValueError("not a did:key in base58btc (did:key:z…)")
    raw = b58decode(did[len(DID_KEY_PREFIX) :])
    if raw[:2] != ED25519_MULTICODEC:
        raise ValueError("unsupported key type (only Ed25519, multicodec 0xed01)")
    if len(raw) != 34:
        raise ValueError("an Ed25519 did:key holds 32 bytes of key")
    return raw[2:]


def is_valid_did(did: str) -> bool:
    try:
        public_key_from_did(did)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair and its DID (``private_key`` is None for a verify-only identity)."""

    did: str
    public_key: bytes
    private_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(
            Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        )

    @classmethod
    def from_private_key(cls, private_key: bytes) -> Identity:
        """From the 32-byte Ed25519 seed."""
        key = Ed25519PrivateKey.from_private_bytes(private_key)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(did_from_public_key(public), public, bytes(private_key))

    @classmethod
    def from_did(cls, did: str) -> Identity:
        return cls(did, public_key_from_did(did))

    def sign(self, data: bytes) -> bytes:
        if self.private_key is None:
            raise ValueError(f"{self.did} has no private key")
        return Ed25519PrivateKey.from_private_bytes(self.private_key).sign(data)


# --- resources ---------------------------------------------------------------------------------


def channel_resource(realm: str, channel: str, topic: str) -> str:
    return f"esdb://{realm}/channel/{channel}/{topic}"


def stream_resource(realm: str, stream_id: str) -> str:
    return f"esdb://{realm}/stream/{stream_id}"


def resource_matches(pattern: str, value: str) -> bool:
    """Equal, or ``pattern`` ends in ``*`` and the rest is a prefix of ``value``."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return pattern == value


# --- the token ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    with_: str
    can: str

    def to_json(self) -> dict[str, str]:
        return {"with": self.with_, "can": self.can}

    def covers(self, other: Grant) -> bool:
        """Every (resource, action) that ``other`` allows, this allows too."""
        return _pattern_covers(self.with_, other.with_) and (self.can == "*" or _pattern_covers(self.can, other.can))


def _pattern_covers(parent: str, child: str) -> bool:
    if not parent.endswith("*"):
        return parent == child
    # a child pattern is covered when everything it matches has the parent's prefix
    return child.startswith(parent[:-1])


def grant(resource: str, action: str) -> Grant:
    return Grant(resource, action)


def _grants(values: Iterable[Grant | Mapping[str, str] | tuple[str, str]]) -> tuple[Grant, ...]:
    out = []
    for g in values:
        if isinstance(g, Grant):
            out.append(g)
        elif isinstance(g, Mapping):
            out.append(Grant(str(g["with"]), str(g["can"])))
        else:
            out.append(Grant(str(g[0]), str(g[1])))
    return tuple(out)


@dataclass(frozen=True)
class Capability:
    iss: str
    aud: str
    nbf: int
    exp: int
    iat: int
    nnc: str
    att: tuple[Grant, ...]
    fct: Mapping[str, Any] = field(default_factory=dict)
    prf: tuple[str, ...] = ()
    signature: bytes | None = field(default=None, repr=False)
    signing_input: bytes | None = field(default=None, repr=False)

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def payload(self) -> dict[str, Any]:
        return {
            "iss": self.iss,
            "aud": self.aud,
            "nbf": self.nbf,
            "exp": self.exp,
            "iat": self.iat,
            "nnc": self.nnc,
            "att": [g.to_json() for g in self.att],
            "fct": dict(self.fct),
            "prf": list(self.prf),
        }

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.exp


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _identity_did(who: Identity | str) -> str:
    return who.did if isinstance(who, Identity) else who


def create(
    issuer: Identity | str,
    audience: Identity | str,
    grants: Iterable[Grant | Mapping[str, str] | tuple[str, str]],
    *,
    ttl_s: int = DEFAULT_TTL_S,
    nbf: int | None = None,
    facts: Mapping[str, Any] | None = None,
    now: int | None = None,
) -> Capability:
    """An unsigned token from ``issuer`` to ``audience`` granting ``grants`` for ``ttl_s`` seconds."""
    iat = int(time.time()) if now is None else now
    iss, aud = _identity_did(issuer), _identity_did(audience)
    for did in (iss, aud):
        if not is_valid_did(did):
            raise ValueError(f"not an Ed25519 did:key: {did!r}")
    return Capability(
        iss=iss,
        aud=aud,
        nbf=iat if nbf is None else nbf,
        exp=iat + ttl_s,
        iat=iat,
        nnc=base64.b64encode(secrets.token_bytes(12)).decode("ascii"),
        att=_grants(grants),
        fct=dict(facts or {}),
    )


def sign(cap: Capability, issuer: Identity | bytes) -> Capability:
    """Sign with the issuer's key (an Identity, or its 32-byte seed)."""
    if cap.signed:
        raise ValueError("already signed")
    ident = issuer if isinstance(issuer, Identity) else Identity.from_private_key(issuer)
    if ident.did != cap.iss:
        raise ValueError("the signing key is not the issuer's")
    header = _b64url(json.dumps(HEADER, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(cap.payload(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signing_input = f"{header}.{payload}".encode("ascii")
    return replace(cap, signature=ident.sign(signing_input), signing_input=signing_input)


def encode(cap: Capability) -> str:
    """The JWT string of a signed token."""
    if cap.signature is None or cap.signing_input is None:
        raise ValueError("not signed")
    return f"{cap.signing_input.decode('ascii')}.{_b64url(cap.signature)}"


def _parse_error(why: str) -> CapabilityError:
    return CapabilityError("parse_error", f"the capability token cannot be parsed: {why}")


def _int(payload: Mapping[str, Any], name: str) -> int:
    v = payload.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise _parse_error(f"{name} must be an integer")
    return v


def _str(payload: Mapping[str, Any], name: str) -> str:
    v = payload.get(name)
    if not isinstance(v, str):
        raise _parse_error(f"{name} must be a string")
    return v


def decode(token: str) -> Capability:
    """Parse a JWT token (no verification)."""
    if not isinstance(token, str) or not token:
        raise _parse_error("empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise _parse_error(f"longer than {MAX_TOKEN_BYTES} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise _parse_error("not a JWT (header.payload.signature)")
    try:
        header = json.loads(_unb64url(parts[0]))
        payload = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise _parse_error("bad base64url or JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise _parse_error("header and payload must be JSON objects")
    if header.get("alg") != "EdDSA" or header.get("typ") not in ("JWT", "UCAN"):
        raise _parse_error("unsupported header (alg must be EdDSA, typ JWT)")
    att = payload.get("att")
    if not isinstance(att, list) or not all(
        isinstance(g, dict) and isinstance(g.get("with"), str) and isinstance(g.get("can"), str) for g in att
    ):
        raise _parse_error("att must be a list of {with, can} strings")
    prf = payload.get("prf", [])
    if not isinstance(prf, list) or not all(isinstance(p, str) for p in prf):
        raise _parse_error("prf must be a list of tokens")
    fct = payload.get("fct", {})
    if not isinstance(fct, dict):
        raise _parse_error("fct must be an object")
    iat = payload.get("iat", 0)
    return Capability(
        iss=_str(payload, "iss"),
        aud=_str(payload, "aud"),
        nbf=_int(payload, "nbf") if "nbf" in payload else (iat if isinstance(iat, int) else 0),
        exp=_int(payload, "exp"),
        iat=_int(payload, "iat") if "iat" in payload else 0,
        nnc=str(payload.get("nnc", "")),
        att=tuple(Grant(g["with"], g["can"]) for g in att),
        fct=fct,
        prf=tuple(prf),
        signature=signature,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
    )


def _check_one(cap: Capability, now: float, leeway_s: int) -> None:
    if cap.signature is None or cap.signing_input is None:
        raise CapabilityError("invalid_signature", "the token is not signed")
    try:
        key = public_key_from_did(cap.iss)
    except ValueError as exc:
        raise CapabilityError("invalid_signature", f"cannot take a public key from the issuer DID: {exc}") from None
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(cap.signature, cap.signing_input)
    except InvalidSignature:
        raise CapabilityError("invalid_signature", "signature verification failed") from None
    if now > cap.exp + leeway_s:
        raise CapabilityError("expired", "the capability token has expired", exp=cap.exp)
    if now + leeway_s < cap.nbf:
        raise CapabilityError("not_yet_valid", "the capability token is not valid yet", nbf=cap.nbf)


def verify(
    token: str | Capability,
    *,
    trusted_issuers: Sequence[str] | None = None,
    audience: str | None = None,
    now: float | None = None,
    leeway_s: int = 0,
) -> Capability:
    """Decode and verify a token and its proof chain; return it.

    ``trusted_issuers``: the DIDs allowed to issue root tokens (no ``prf``); None trusts any
    root (only for tests and tools). ``audience``: when given, the token's ``aud`` must equal it."""
    cap = decode(token) if isinstance(token, str) else token
    current = time.time() if now is None else now
    if audience is not None and cap.aud != audience:
        raise CapabilityError("audience_mismatch", "the token is not addressed to this service", aud=cap.aud)
    _verify_chain(cap, trusted_issuers, current, leeway_s, 0)
    return cap


def _verify_chain(cap: Capability, trusted: Sequence[str] | None, now: float, leeway_s: int, depth: int) -> None:
    if depth >= MAX_CHAIN:
        raise _parse_error(f"proof chain longer than {MAX_CHAIN}")
    _check_one(cap, now, leeway_s)
    if not cap.prf:
        if trusted is not None and cap.iss not in trusted:
            raise CapabilityError("untrusted_issuer", "the root token's issuer is not trusted here", iss=cap.iss)
        return
    proofs = [decode(p) for p in cap.prf]
    for proof in proofs:
        if proof.aud != cap.iss:
            raise CapabilityError(
                "audience_mismatch", "a delegated token's issuer is not its proof's audience", iss=cap.iss
            )
        if cap.exp > proof.exp:
            raise CapabilityError(
                "insufficient_permissions", "a delegated token outlives its proof", exp=cap.exp, proof_exp=proof.exp
            )
        _verify_chain(proof, trusted, now, leeway_s, depth + 1)
    for g in cap.att:
        if not any(pg.covers(g) for proof in proofs for pg in proof.att):
            raise CapabilityError(
                "insufficient_permissions",
                "a delegated grant is broader than its proof allows",
                grant=g.to_json(),
            )


def authorize(
    token: str | Capability,
    resource: str,
    action: str,
    *,
    trusted_issuers: Sequence[str] | None = None,
    audience: str | None = None,
    now: float | None = None,
    leeway_s: int = 0,
) -> Capability:
    """``verify``, then require a grant covering ``resource`` and ``action``."""
    cap = verify(token, trusted_issuers=trusted_issuers, audience=audience, now=now, leeway_s=leeway_s)
    for g in cap.att:
        if resource_matches(g.with_, resource) and (g.can == "*" or resource_matches(g.can, action)):
            return cap
    raise CapabilityError(
        "insufficient_permissions", f"no grant for {resource} / {action}", resource=resource, action=action
    )


def check(
    mode: CapabilityMode,
    token: str | None,
    resource: str,
    action: str,
    *,
    trusted_issuers: Sequence[str] | None = None,
    audience: str | None = None,
    now: float | None = None,
    leeway_s: int = 0,
) -> Capability | None:
    """The mode rule: ``disabled`` allows everything; ``optional`` checks a token when one is
    given; ``required`` needs one (``capability_required``)."""
    if mode == "disabled":
        return None
    if not token:
        if mode == "required":
            raise CapabilityError("capability_required", f"a capability token is required for {resource}")
        return None
    return authorize(
        token, resource, action, trusted_issuers=trusted_issuers, audience=audience, now=now, leeway_s=leeway_s
    )


def delegate(
    parent: str | Capability,
    audience: Identity | str,
    grants: Iterable[Grant | Mapping[str, str] | tuple[str, str]],
    *,
    ttl_s: int = DEFAULT_TTL_S,
    facts: Mapping[str, Any] | None = None,
    now: int | None = None,
) -> Capability:
    """An unsigned child of ``parent`` (which must be signed) for ``audience``: its issuer is
    the parent's audience (who signs it), its grants must be covered by the parent's
    (``insufficient_permissions`` otherwise) and it expires no later than the parent."""
    cap = decode(parent) if isinstance(parent, str) else parent
    parent_token = parent if isinstance(parent, str) else encode(parent)
    wanted = _grants(grants)
    for g in wanted:
        if not any(pg.covers(g) for pg in cap.att):
            raise CapabilityError(
                "insufficient_permissions", "delegated grants must be a subset of the parent's", grant=g.to_json()
            )
    iat = int(time.time()) if now is None else now
    child = create(cap.aud, audience, wanted, ttl_s=ttl_s, facts=facts, now=iat)
    return replace(child, exp=min(child.exp, cap.exp), prf=(parent_token,))
