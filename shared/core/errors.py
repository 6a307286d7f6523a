"""One error tree for the gateway, and its wire form.

Every error that crosses the wire has a stable snake_case ``code`` (SPEC.md §2; the list is
append-only), an HTTP-like ``status`` that goes into the ADR-32 ``Nats-Service-Error-Code``
header, and a ``retryable`` flag that clients use to decide whether to try again.

    GatewayError
    ├── InvalidRequestError        invalid_request         400
    ├── PayloadTooLargeError       payload_too_large       413
    ├── WrongExpectedVersionError  wrong_expected_version  409
    ├── AlreadyExistsError         already_exists          409
    ├── StreamNotFoundError        stream_not_found        404
    ├── StoreNotFoundError         store_not_found         404
    ├── NotFoundError              not_found               404
    ├── NoSnapshotError            no_snapshot             404
    ├── NoCauseError               no_cause                404
    ├── SubscriptionNotFoundError  subscription_not_found  404
    ├── RateLimitedError           rate_limited            429  (retryable)
    ├── SignatureRequiredError     signature_required      401
    ├── InvalidSignatureError      invalid_signature       401
    ├── MessageExpiredError        message_expired         401
    ├── MissingTimestampError      missing_timestamp       400
    ├── InvalidTimestampError      invalid_timestamp       400
    ├── UnauthorizedError          unauthorized            403
    ├── GatewayTimeoutError        timeout                 504  (retryable)
    ├── UnavailableError           unavailable             503  (retryable)
    ├── InternalError              internal                500
    ├── RetriesExhaustedError      retries_exhausted       503  (client side only)
    └── QuotaExceededError         quota_exceeded          429

The envelope is ``{"error": {"code", "message", "retryable", "details"}}``; ``error_from_envelope``
turns it back into the same class, so Python callers and tests raise what the service raised.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "AlreadyExistsError",
    "ErrorCode",
    "GatewayError",
    "GatewayTimeoutError",
    "InternalError",
    "InvalidRequestError",
    "InvalidSignatureError",
    "InvalidTimestampError",
    "MessageExpiredError",
    "MissingTimestampError",
    "NoCauseError",
    "NoSnapshotError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "RateLimitedError",
    "RetriesExhaustedError",
    "SignatureRequiredError",
    "StoreNotFoundError",
    "StreamNotFoundError",
    "SubscriptionNotFoundError",
    "UnauthorizedError",
    "UnavailableError",
    "WrongExpectedVersionError",
    "error_class",
    "error_from_envelope",
]

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ErrorCode(StrEnum):
    """Stable wire codes. Append only: never rename, reuse or remove one."""

    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    WRONG_EXPECTED_VERSION = "wrong_expected_version"
    ALREADY_EXISTS = "already_exists"
    STREAM_NOT_FOUND = "stream_not_found"
    STORE_NOT_FOUND = "store_not_found"
    NOT_FOUND = "not_found"
    NO_SNAPSHOT = "no_snapshot"
    NO_CAUSE = "no_cause"
    SUBSCRIPTION_NOT_FOUND = "subscription_not_found"
    RATE_LIMITED = "rate_limited"
    SIGNATURE_REQUIRED = "signature_required"
    INVALID_SIGNATURE = "invalid_signature"
    MESSAGE_EXPIRED = "message_expired"
    MISSING_TIMESTAMP = "missing_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNAUTHORIZED = "unauthorized"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    RETRIES_EXHAUSTED = "retries_exhausted"
    QUOTA_EXCEEDED = "quota_exceeded"


class GatewayError(Exception):
    """Base of every error the gateway reports. Subclasses fix code, status and retryable."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.code.value)
        self.message = message or self.code.value
        self.details: dict[str, Any] = details or {}

    def to_envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code.value,
                "message": self.message,
                "retryable": self.retryable,
                "details": self.details,
            }
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"


class InvalidRequestError(GatewayError):
    """The request could not be decoded or failed validation; ``details`` names the field."""

    code = ErrorCode.INVALID_REQUEST
    status = 400


class PayloadTooLargeError(GatewayError):
    """The request or the record it would write exceeds a size limit."""

    code = ErrorCode.PAYLOAD_TOO_LARGE
    status = 413


class WrongExpectedVersionError(GatewayError):
    """An append's expected version did not hold; ``details`` has ``expected`` and ``actual``."""

    code = ErrorCode.WRONG_EXPECTED_VERSION
    status = 409


class AlreadyExistsError(GatewayError):
    """The thing to be created exists already."""

    code = ErrorCode.ALREADY_EXISTS
    status = 409


class StreamNotFoundError(GatewayError):
    """The stream has no events (never written, or deleted)."""

    code = ErrorCode.STREAM_NOT_FOUND
    status = 404


class StoreNotFoundError(GatewayError):
    """The store named in the subject does not exist and is not created on first use here."""

    code = ErrorCode.STORE_NOT_FOUND
    status = 404


class NotFoundError(GatewayError):
    """A named thing (snapshot, schema, link, event) does not exist."""

    code = ErrorCode.NOT_FOUND
    status = 404


class NoSnapshotError(GatewayError):
    """An operation that needs a snapshot found none."""

    code = ErrorCode.NO_SNAPSHOT
    status = 404


class NoCauseError(GatewayError):
    """The event exists but has no causation id."""

    code = ErrorCode.NO_CAUSE
    status = 404


class SubscriptionNotFoundError(GatewayError):
    """The subscription named in the request does not exist."""

    code = ErrorCode.SUBSCRIPTION_NOT_FOUND
    status = 404


class RateLimitedError(GatewayError):
    """Too many requests for this channel/topic right now; try again later."""

    code = ErrorCode.RATE_LIMITED
    status = 429
    retryable = True


class SignatureRequiredError(GatewayError):
    """The channel requires an HMAC signature and the message has none."""

    code = ErrorCode.SIGNATURE_REQUIRED
    status = 401


class InvalidSignatureError(GatewayError):
    """The message's HMAC signature does not verify (or was seen before: a replay)."""

    code = ErrorCode.INVALID_SIGNATURE
    status = 401


class MessageExpiredError(GatewayError):
    """The signed message is older than the configured TTL."""

    code = ErrorCode.MESSAGE_EXPIRED
    status = 401


class MissingTimestampError(GatewayError):
    """A signed message lacks ``signed_at``."""

    code = ErrorCode.MISSING_TIMESTAMP
    status = 400


class InvalidTimestampError(GatewayError):
    """A signed message's ``signed_at`` is not a number, or lies in the future."""

    code = ErrorCode.INVALID_TIMESTAMP
    status = 400


class UnauthorizedError(GatewayError):
    """A capability check failed; ``details.reason`` names why."""

    code = ErrorCode.UNAUTHORIZED
    status = 403


class GatewayTimeoutError(GatewayError):
    """JetStream (or a service) did not answer in time. Safe to retry appends with event ids."""

    code = ErrorCode.TIMEOUT
    status = 504
    retryable = True


class UnavailableError(GatewayError):
    """JetStream or a service is unavailable right now (leader election, no responders)."""

    code = ErrorCode.UNAVAILABLE
    status = 503
    retryable = True


class InternalError(GatewayError):
    """An unexpected failure. The message is generic; the cause is logged, never sent."""

    code = ErrorCode.INTERNAL
    status = 500


class RetriesExhaustedError(GatewayError):
    """The client's retry policy gave up; ``last_error`` is the final error seen."""

    code = ErrorCode.RETRIES_EXHAUSTED
    status = 503

    def __init__(
        self,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        last_error: GatewayError | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.last_error = last_error


class QuotaExceededError(GatewayError):
    """A per-store quota (subscriptions, links, schemas, forwardings, auto-created stores) is used
    up; ``details`` has ``quota``, ``limit`` and ``store``. Not retryable: free something first."""

    code = ErrorCode.QUOTA_EXCEEDED
    status = 429


_BY_CODE: dict[str, type[GatewayError]] = {
    cls.code.value: cls
    for cls in (
        InvalidRequestError,
        PayloadTooLargeError,
        WrongExpectedVersionError,
        AlreadyExistsError,
        StreamNotFoundError,
        StoreNotFoundError,
        NotFoundError,
        NoSnapshotError,
        NoCauseError,
        SubscriptionNotFoundError,
        RateLimitedError,
        SignatureRequiredError,
        InvalidSignatureError,
        MessageExpiredError,
        MissingTimestampError,
        InvalidTimestampError,
        UnauthorizedError,
        GatewayTimeoutError,
        UnavailableError,
        InternalError,
        RetriesExhaustedError,
        QuotaExceededError,
    )
}


def error_class(code: str) -> type[GatewayError]:
    """The class for a wire code; unknown codes (from a newer service) map to GatewayError."""
    return _BY_CODE.get(code, GatewayError)


def error_from_envelope(envelope: Any) -> GatewayError:
    """Rebuild the error a service sent. Tolerates malformed envelopes (returns InternalError)."""
    body = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(body, dict):
        return InternalError("malformed error reply", details={"reply": repr(envelope)[:200]})
    code = str(body.get("code", "internal"))
    details = body.get("details")
    cls = error_class(code)
    err = cls(str(body.get("message", code)), details=details if isinstance(details, dict) else {})
    if cls is GatewayError:
        err.details.setdefault("code", code)
    return err
