"""Retry policy (SPEC.md §10): delays, what is retried, exhaustion, and observability."""

from __future__ import annotations

import random
from typing import Any

import pytest

from esdb_gater.shared.client.retry import RetryConfig, calculate_delay, new_config, with_retry
from esdb_gater.shared.core.errors import (
    GatewayTimeoutError,
    RateLimitedError,
    RetriesExhaustedError,
    StreamNotFoundError,
    UnavailableError,
    WrongExpectedVersionError,
)
from esdb_gater.shared.core.telemetry import attach, detach


@pytest.mark.parametrize(("attempt", "lo", "hi"), [(0, 101, 125), (1, 201, 250), (2, 401, 500)])
def test_delay_is_base_times_two_to_the_n_plus_jitter(attempt: int, lo: int, hi: int) -> None:
    cfg = RetryConfig(base_delay_ms=100, max_delay_ms=10_000)
    rng = random.Random(7)
    delays = {calculate_delay(attempt, cfg, rng) for _ in range(500)}
    assert min(delays) >= lo and max(delays) <= hi
    assert len(delays) > 5  # there is jitter


def test_delay_is_capped_at_max() -> None:
    assert calculate_delay(10, RetryConfig(base_delay_ms=100, max_delay_ms=500)) == 500
    assert calculate_delay(1000, RetryConfig()) == 30_000


def test_new_config_is_the_seeds_constructor() -> None:
    assert new_config(50, 1000, 3) == RetryConfig(base_delay_ms=50, max_delay_ms=1000, max_retries=3)
    assert RetryConfig() == RetryConfig(base_delay_ms=100, max_delay_ms=30_000, max_retries=10)


class Flaky:
    def __init__(self, errors: list[Exception], result: str = "ok") -> None:
        self.errors = errors
        self.calls = 0
        self.result = result

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


async def _no_sleep(_: float) -> None:
    return None


async def test_success_needs_one_call() -> None:
    fn = Flaky([])
    assert await with_retry(fn, RetryConfig(max_retries=3), sleep=_no_sleep) == "ok"
    assert fn.calls == 1


async def test_retriable_errors_are_retried_until_success() -> None:
    fn = Flaky([UnavailableError(), GatewayTimeoutError(), RateLimitedError()])
    assert await with_retry(fn, RetryConfig(max_retries=3), sleep=_no_sleep) == "ok"
    assert fn.calls == 4


@pytest.mark.parametrize("err", [WrongExpectedVersionError(), StreamNotFoundError()])
async def test_non_retriable_errors_return_at_once(err: Exception) -> None:
    fn = Flaky([err])
    with pytest.raises(type(err)):
        await with_retry(fn, RetryConfig(max_retries=5), sleep=_no_sleep)
    assert fn.calls == 1


async def test_exhaustion_carries_the_last_error_and_is_observable() -> None:
    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    assert attach("test-retry", lambda e, m, md: seen.append((e, m, md)))
    assert not attach("test-retry", lambda e, m, md: None)  # id taken
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    try:
        fn = Flaky([UnavailableError("one"), UnavailableError("two"), GatewayTimeoutError("three")])
        with pytest.raises(RetriesExhaustedError) as ei:
            await with_retry(
                fn, RetryConfig(base_delay_ms=10, max_retries=2), store="s1", op="stream.append", sleep=sleep
            )
    finally:
        assert detach("test-retry")
        assert not detach("test-retry")
    assert fn.calls == 3
    assert isinstance(ei.value.last_error, GatewayTimeoutError)
    assert ei.value.details["last_error"]["code"] == "timeout"
    assert ei.value.code.value == "retries_exhausted"
    attempts = [x for x in seen if x[0] == ("esdb_gater", "retry", "attempt")]
    assert [m["attempt"] for _, m, _ in attempts] == [1, 2]
    assert all(md["store_id"] == "s1" and md["op"] == "stream.append" for _, _, md in attempts)
    assert [e for e, _, _ in seen][-1] == ("esdb_gater", "retry", "exhausted")
    assert seen[-1][1] == {"total_attempts": 3}
    assert len(slept) == 2 and 0.01 < slept[0] <= 0.0125 + 1e-9
