"""The error tree and its wire form (SPEC.md §2). The code list is append-only: this file pins it,
so any change to the wire vocabulary shows up as a reviewed diff."""

from __future__ import annotations

from typing import Any

import pytest

from esdb_gater.shared.core import errors as e
from esdb_gater.shared.core.errors import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    ErrorCode,
    GatewayError,
    InternalError,
    RetriesExhaustedError,
    error_class,
    error_from_envelope,
)

# In declaration order. Append new codes at the end; never rename, reorder or remove one.
PINNED_CODES = [
    "invalid_request",
    "payload_too_large",
    "wrong_expected_version",
    "already_exists",
    "stream_not_found",
    "store_not_found",
    "not_found",
    "no_snapshot",
    "no_cause",
    "subscription_not_found",
    "rate_limited",
    "signature_required",
    "invalid_signature",
    "message_expired",
    "missing_timestamp",
    "invalid_timestamp",
    "unauthorized",
    "timeout",
    "unavailable",
    "internal",
    "retries_exhausted",
    "quota_exceeded",
]

# code -> (class name, Nats-Service-Error-Code status, retryable)
PINNED_TABLE: dict[str, tuple[str, int, bool]] = {
    "invalid_request": ("InvalidRequestError", 400, False),
    "payload_too_large": ("PayloadTooLargeError", 413, False),
    "wrong_expected_version": ("WrongExpectedVersionError", 409, False),
    "already_exists": ("AlreadyExistsError", 409, False),
    "stream_not_found": ("StreamNotFoundError", 404, False),
    "store_not_found": ("StoreNotFoundError", 404, False),
    "not_found": ("NotFoundError", 404, False),
    "no_snapshot": ("NoSnapshotError", 404, False),
    "no_cause": ("NoCauseError", 404, False),
    "subscription_not_found": ("SubscriptionNotFoundError", 404, False),
    "rate_limited": ("RateLimitedError", 429, True),
    "signature_required": ("SignatureRequiredError", 401, False),
    "invalid_signature": ("InvalidSignatureError", 401, False),
    "message_expired": ("MessageExpiredError", 401, False),
    "missing_timestamp": ("MissingTimestampError", 400, False),
    "invalid_timestamp": ("InvalidTimestampError", 400, False),
    "unauthorized": ("UnauthorizedError", 403, False),
    "timeout": ("GatewayTimeoutError", 504, True),
    "unavailable": ("UnavailableError", 503, True),
    "internal": ("InternalError", 500, False),
    "retries_exhausted": ("RetriesExhaustedError", 503, False),
    "quota_exceeded": ("QuotaExceededError", 429, False),
}

# The codes SPEC.md §2 names (the original's vocabulary): all of them must exist.
SPEC_CODES = {
    "wrong_expected_version",
    "stream_not_found",
    "store_not_found",
    "not_found",
    "already_exists",
    "no_snapshot",
    "no_cause",
    "subscription_not_found",
    "invalid_request",
    "payload_too_large",
    "rate_limited",
    "signature_required",
    "invalid_signature",
    "message_expired",
    "missing_timestamp",
    "invalid_timestamp",
    "unauthorized",
    "timeout",
    "unavailable",
    "internal",
}

ALL_CLASSES: list[type[GatewayError]] = [getattr(e, name) for name, _, _ in PINNED_TABLE.values()]


def test_error_codes_are_append_only() -> None:
    current = [c.value for c in ErrorCode]
    assert current[: len(PINNED_CODES)] == PINNED_CODES, "an error code was renamed, reordered or removed"
    assert current == PINNED_CODES, "new error code: append it to PINNED_CODES and PINNED_TABLE"


def test_spec_codes_all_exist() -> None:
    assert {c.value for c in ErrorCode} >= SPEC_CODES


def test_codes_are_snake_case() -> None:
    for code in ErrorCode:
        assert code.value == code.value.lower()
        assert code.value.replace("_", "").isalpha()


def test_error_table_is_pinned() -> None:
    actual = {}
    for code in ErrorCode:
        cls = error_class(code.value)
        actual[code.value] = (cls.__name__, cls.status, cls.retryable)
    assert actual == PINNED_TABLE


@pytest.mark.parametrize("code", PINNED_CODES)
def test_every_code_has_its_own_class(code: str) -> None:
    cls = error_class(code)
    assert cls is not GatewayError
    assert issubclass(cls, GatewayError)
    assert cls.code == code
    assert cls.__name__.endswith("Error")
    assert cls.__name__ in e.__all__


def test_unknown_code_maps_to_base_class() -> None:
    assert error_class("from_a_newer_service") is GatewayError


def test_adr32_header_names() -> None:
    assert ERROR_HEADER == "Nats-Service-Error"
    assert ERROR_CODE_HEADER == "Nats-Service-Error-Code"


def test_envelope_shape() -> None:
    err = e.WrongExpectedVersionError("expected 3, at 5", details={"expected": 3, "actual": 5})
    assert err.to_envelope() == {
        "error": {
            "code": "wrong_expected_version",
            "message": "expected 3, at 5",
            "retryable": False,
            "details": {"expected": 3, "actual": 5},
        }
    }


def test_default_message_is_the_code() -> None:
    err = e.StreamNotFoundError()
    assert err.message == "stream_not_found"
    assert str(err) == "stream_not_found"
    assert err.details == {}
    assert err.to_envelope()["error"]["details"] == {}


def test_repr_names_class_message_and_details() -> None:
    assert repr(e.NotFoundError("gone", details={"k": 1})) == "NotFoundError('gone', details={'k': 1})"


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_envelope_round_trip(cls: type[GatewayError]) -> None:
    original = cls(f"boom from {cls.__name__}", details={"field": "x", "n": [1, 2], "nested": {"a": None}})
    back = error_from_envelope(original.to_envelope())
    assert type(back) is cls
    assert back.message == original.message
    assert back.details == original.details
    assert back.retryable == cls.retryable
    assert back.status == cls.status
    assert back.to_envelope() == original.to_envelope()


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_envelope_round_trip_without_message_or_details(cls: type[GatewayError]) -> None:
    back = error_from_envelope({"error": {"code": cls.code.value}})
    assert type(back) is cls
    assert back.message == cls.code.value
    assert back.details == {}


def test_retries_exhausted_keeps_last_error() -> None:
    last = e.UnavailableError("down")
    err = RetriesExhaustedError("gave up", last_error=last)
    assert err.last_error is last
    assert RetriesExhaustedError().last_error is None


def test_unknown_code_round_trips_as_base_class_with_code_in_details() -> None:
    back = error_from_envelope({"error": {"code": "brand_new", "message": "m", "retryable": True, "details": {}}})
    assert type(back) is GatewayError
    assert back.message == "m"
    assert back.details["code"] == "brand_new"


@pytest.mark.parametrize(
    "envelope",
    [
        None,
        42,
        "error",
        b"error",
        [],
        [{"error": {"code": "not_found"}}],
        {},
        {"error": None},
        {"error": "not_found"},
        {"error": ["not_found"]},
        {"err": {"code": "not_found"}},
    ],
    ids=repr,
)
def test_malformed_envelope_is_internal_error(envelope: Any) -> None:
    err = error_from_envelope(envelope)
    assert type(err) is InternalError
    assert err.message == "malformed error reply"
    assert "reply" in err.details
    assert len(err.details["reply"]) <= 200


def test_malformed_envelope_repr_is_truncated() -> None:
    err = error_from_envelope("x" * 10_000)
    assert type(err) is InternalError
    assert len(err.details["reply"]) == 200


@pytest.mark.parametrize("details", ["text", 42, ["a"], None, True])
def test_non_object_details_become_empty(details: Any) -> None:
    err = error_from_envelope({"error": {"code": "stream_not_found", "message": "m", "details": details}})
    assert type(err) is e.StreamNotFoundError
    assert err.details == {}


def test_non_string_code_and_message_are_tolerated() -> None:
    err = error_from_envelope({"error": {"code": 404, "message": 7}})
    assert type(err) is GatewayError
    assert err.message == "7"
    assert err.details["code"] == "404"


def test_missing_code_is_internal() -> None:
    err = error_from_envelope({"error": {"message": "m"}})
    assert type(err) is InternalError
    assert err.message == "m"


def test_errors_are_exceptions_that_can_be_raised_and_caught_by_base() -> None:
    with pytest.raises(GatewayError) as ei:
        raise e.RateLimitedError("slow down", details={"retry_after_ms": 100})
    assert ei.value.retryable is True
    assert ei.value.details == {"retry_after_ms": 100}
