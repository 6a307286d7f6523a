"""HMAC signing of channel messages (SPEC.md §9, docs/security.md).

``sign(message[, secret])`` returns a copy of the message with ``signed_at`` (integer Unix
seconds) and ``signature``: standard Base64 (with padding) of HMAC-SHA256(secret, C), where C is
the canonical JSON encoding of the message without its ``signature`` key:

* JSON (RFC 8259) with no insignificant whitespace, UTF-8, object keys sorted by their UTF-16
  code units at every level (what ``Object.keys(o).sort()`` gives in JavaScript);
* strings escaped as ``JSON.stringify`` does (``\\" \\\\ \\b \\f \\n \\r \\t``, other control
  characters as ``\\u00xx``; nothing else, so non-ASCII stays raw UTF-8);
* numbers as ECMAScript ``Number::toString`` (``1.0`` → ``1``, ``1e21`` → ``1e+21``); NaN and
  infinities are not JSON and cannot be signed.

This is RFC 8785 (JCS). Any language can reproduce it; docs/security.md has the test vectors
(``docs/hmac-vectors.json``), which tests check here and in Node.

``verify(message[, secret])`` checks, in this order: ``signature`` present (else
``signature_required``), ``signed_at`` present (``missing_timestamp``) and an integer
(``invalid_timestamp``), not further in the future than the clock skew (``invalid_timestamp``),
not older than the TTL (``message_expired``), and the signature, compared in constant time
(``invalid_signature``). ``verify_once`` adds replay protection: a signature already seen within
its TTL is ``invalid_signature`` with ``details.reason = "replayed"``. What remembers signatures
is a ``ReplayGuard``; ``MemoryReplayGuard`` is bounded and per process, the channel service uses
a JetStream-backed guard shared by its instances (services/channel/store.py).

The secret comes from ``set_secret`` or from the caller; the service reads it from the
environment or a file only (``resolve_secret``) and never logs it.
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import hmac
import json.encoder as json_encoder
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from esdb_gater.shared.core.errors import (
    InvalidSignatureError,
    InvalidTimestampError,
    MessageExpiredError,
    MissingTimestampError,
    SignatureRequiredError,
)

__all__ = [
    "DEFAULT_MAX_SKEW_S",
    "DEFAULT_TTL_S",
    "MemoryReplayGuard",
    "ReplayGuard",
    "canonical_json",
    "resolve_secret",
    "set_secret",
    "sign",
    "signature_of",
    "verify",
    "verify_once",
]

log = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 300
DEFAULT_MAX_SKEW_S: Final = 5
SIGNATURE: Final = "signature"
SIGNED_AT: Final = "signed_at"
SECRET_ENV: Final = "ESDB_GATER_SECRET"  # the original's variable name, kept as a fallback

_secret: bytes | None = None


# --- canonical JSON (RFC 8785) -----------------------------------------------------------------


def _number(value: float) -> str:
    """ECMAScript Number::toString for a finite double."""
    if not math.isfinite(value):
        raise ValueError("NaN and infinities cannot be encoded")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digit string that round-trips, as ECMAScript requires
    _, digit_tuple, exp = decimal.Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exp, int)
    k = len(digits)
    n = exp + len(digit_tuple)  # position of the decimal point relative to the digits
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits if k == 1 else digits[0] + "." + digits[1:]
        out = f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + out


# Strings: the C encoder of the json module escapes exactly what JSON.stringify escapes
# (``" \\ \b \f \n \r \t``, other characters below U+0020 as lowercase ``\u00xx``) and passes
# everything else through, lone surrogates included (``canonical_json`` then refuses them).
_string: Final = json_encoder.encode_basestring


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _sorted_keys(value: Mapping[Any, Any]) -> list[str]:
    """The keys in UTF-16 code unit order. For ASCII keys that is plain ``sorted``."""
    keys = list(value)
    try:
        ascii_only = "".join(keys).isascii()  # join: a TypeError unless every key is a str
    except TypeError:
        raise ValueError("object keys must be strings") from None
    if ascii_only:
        keys.sort()
    else:
        keys.sort(key=_utf16_key)
    return keys


def _encode(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise ValueError("nesting deeper than 64 levels")
    t = type(value)  # the exact types a decoder gives first; subclasses take the isinstance tests below
    if t is str:
        out.append(_string(value))
    elif t is int:
        out.append(str(value))
    elif t is dict or (t is not list and t is not tuple and isinstance(value, Mapping)):
        out.append("{")
        first = True
        inline = depth < 64  # a value one level down may be written here (the depth check passes)
        for key in _sorted_keys(value):
            if first:
                first = False
            else:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            item = value[key]
            if inline and type(item) is str:  # the common leaves without a call
                out.append(_string(item))
            elif inline and type(item) is int:
                out.append(str(item))
            else:
                _encode(item, out, depth + 1)
        out.append("}")
    elif t is list or t is tuple or isinstance(value, list | tuple):
        out.append("[")
        first = True
        for item in value:
            if first:
                first = False
            else:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]")
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON of ``value`` (RFC 8785); ValueError when it is not JSON."""
    out: list[str] = []
    _encode(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


# --- secret --------------------------------------------------------------------------------------


def _as_bytes(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


_KEYED_MAX: Final = 16
_keyed_cache: dict[bytes, hmac.HMAC] = {}


def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 object with ``secret`` already absorbed; callers ``copy()`` it (the key
    schedule is done once per secret, not per message). At most ``_KEYED_MAX`` secrets are kept."""
    mac = _keyed_cache.get(secret)
    if mac is None:
        if len(_keyed_cache) >= _KEYED_MAX:
            _keyed_cache.clear()
        mac = _keyed_cache[secret] = hmac.new(secret, digestmod=hashlib.sha256)
    return mac


def set_secret(secret: bytes | str) -> None:
    """The process-wide default secret of ``sign`` and ``verify``."""
    global _secret
    value = _as_bytes(secret)
    if not value:
        raise ValueError("the HMAC secret must not be empty")
    _secret = value


def _default_secret() -> bytes:
    if _secret is None:
        raise ValueError("no HMAC secret: call set_secret() or pass one")
    return _secret


def resolve_secret(value: str | None, file: str | Path | None) -> tuple[bytes, str]:
    """The service's secret and where it came from: the configured value (environment), the
    configured file (trailing newline stripped), ``ESDB_GATER_SECRET``, else 32 random bytes.
    The secret itself is never logged."""
    if value:
        return value.encode("utf-8"), "setting"
    if file:
        data = Path(file).read_bytes().rstrip(b"\r\n")
        if not data:
            raise ValueError(f"the HMAC secret file {file} is empty")
        return data, "file"
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode("utf-8"), SECRET_ENV
    log.warning(
        "no HMAC secret configured (ESDB_GATER_CHANNELS__HMAC_SECRET or _FILE): using a random one; "
        "signed messages from other processes will not verify"
    )
    return secrets.token_bytes(32), "random"


# --- sign / verify ---------------------------------------------------------------------------


def signature_of(message: Mapping[str, Any], secret: bytes | str) -> str:
    """Base64 HMAC-SHA256 over the canonical JSON of ``message`` minus ``signature``."""
    body = {k: v for k, v in message.items() if k != SIGNATURE}
    mac = _keyed(_as_bytes(secret)).copy()
    mac.update(canonical_json(body))
    return base64.b64encode(mac.digest()).decode("ascii")


def sign(message: Mapping[str, Any], secret: bytes | str | None = None, *, now: int | None = None) -> dict[str, Any]:
    """A copy of ``message`` with ``signed_at`` (now, in seconds; replaces one present) and
    ``signature``."""
    out = {k: v for k, v in message.items() if k != SIGNATURE}
    out[SIGNED_AT] = int(time.time()) if now is None else now
    out[SIGNATURE] = signature_of(out, secret if secret is not None else _default_secret())
    return out


def verify(
    message: Any,
    secret: bytes | str | None = None,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
    now: float | None = None,
) -> None:
    """Raise the error that rejects ``message``, or return when it is signed and fresh.
    Stateless: replays are ``verify_once``'s job."""
    if not isinstance(message, Mapping) or SIGNATURE not in message:
        raise SignatureRequiredError(
            "this message must be signed (an object with signature and signed_at)",
            details={"reason": "missing_signature"},
        )
    if SIGNED_AT not in message:
        raise MissingTimestampError("a signed message needs signed_at (Unix seconds)", details={"field": SIGNED_AT})
    signed_at = message[SIGNED_AT]
    if not isinstance(signed_at, int) or isinstance(signed_at, bool):
        raise InvalidTimestampError(
            "signed_at must be an integer number of Unix seconds", details={"field": SIGNED_AT, "reason": "not_integer"}
        )
    current = time.time() if now is None else now
    if signed_at - current > max_skew_s:
        raise InvalidTimestampError(
            "signed_at lies in the future",
            details={"field": SIGNED_AT, "reason": "in_future", "max_skew_s": max_skew_s},
        )
    if current - signed_at > ttl_s:
        raise MessageExpiredError(
            f"the message was signed more than {ttl_s}s ago", details={"signed_at": signed_at, "ttl_s": ttl_s}
        )
    given = message[SIGNATURE]
    if not isinstance(given, str):
        raise InvalidSignatureError("signature must be a Base64 string", details={"reason": "malformed"})
    try:
        expected = signature_of(message, secret if secret is not None else _default_secret())
    except ValueError as exc:
        raise InvalidSignatureError(
            "the message cannot be encoded canonically, so it cannot carry a valid signature",
            details={"reason": "not_canonical", "detail": str(exc)[:200]},
        ) from None
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogatepass")):
        raise InvalidSignatureError("the signature does not match", details={"reason": "mismatch"})


class ReplayGuard(Protocol):
    async def first_seen(self, signature: str, expires_at: float) -> bool:
        """Remember ``signature`` until ``expires_at`` (Unix seconds); False if it was already seen."""
        ...


class MemoryReplayGuard:
    """Signatures seen by this process, forgotten at their expiry; at most ``max_entries``
    (when full, the entries that expire first are dropped early)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def first_seen(self, signature: str, expires_at: float) -> bool:
        now = time.time()
        while self._seen:  # insertion order ~ expiry order (the TTL is one constant)
            oldest, exp = next(iter(self._seen.items()))
            if exp > now and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest]
        seen = self._seen.get(signature)
        if seen is not None and seen > now:
            return False
        self._seen[signature] = expires_at
        return True


async def verify_once(
    message: Any,
    guard: ReplayGuard,
    secret: bytes | str | None = None,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
    now: float | None = None,
) -> None:
    """``verify``, then reject a signature seen before within its TTL."""
    verify(message, secret, ttl_s=ttl_s, max_skew_s=max_skew_s, now=now)
    await check_replay(message, guard, ttl_s=ttl_s, max_skew_s=max_skew_s)


async def check_replay(
    message: Mapping[str, Any], guard: ReplayGuard, *, ttl_s: int = DEFAULT_TTL_S, max_skew_s: int = DEFAULT_MAX_SKEW_S
) -> None:
    """The replay half of ``verify_once`` for a message ``verify`` accepted: a signature is
    remembered until ``signed_at + ttl_s`` (plus the skew), after which ``verify`` rejects the
    message as expired anyway."""
    signature = str(message[SIGNATURE])
    if not await guard.first_seen(signature, float(message[SIGNED_AT]) + ttl_s + max_skew_s):
        raise InvalidSignatureError("this signed message was already accepted (replay)", details={"reason": "replayed"})
