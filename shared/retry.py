"""Retry with exponential backoff and jitter (SPEC.md §10, the seed's ``esdb_gater_retry``).

``delay(n) = min(base·2^n + jitter, max)`` with jitter uniform in ``[1, max(1, base·2^n / 4)]``
milliseconds; defaults 100 ms, 30 000 ms, 10 retries (11 calls in all). Only errors whose
``retryable`` flag is set (``timeout``, ``unavailable``, ``rate_limited``) are retried; any other
error (``wrong_expected_version``, ``stream_not_found``, ``not_found``, …) returns at once.
When the retries run out, ``RetriesExhaustedError`` carries the last error.

Every retry and every give-up is observable: ``shared.telemetry.emit`` calls the in-process
handlers attached with ``attach`` and counts them in OpenTelemetry metrics.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from shared.errors import GatewayError, RetriesExhaustedError
from shared.telemetry import emit

__all__ = ["RetryConfig", "calculate_delay", "new_config", "with_retry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    base_delay_ms: int = 100
    max_delay_ms: int = 30_000
    max_retries: int = 10


def new_config(base_delay_ms: int, max_delay_ms: int, max_retries: int) -> RetryConfig:
    """The seed's ``esdb_gater_retry:new_config(Base, Max, Attempts)``."""
    return RetryConfig(base_delay_ms, max_delay_ms, max_retries)


def calculate_delay(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> int:
    """Milliseconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
    base = config.base_delay_ms * (2 ** min(attempt, 32))
    jitter = (rng or random).randint(1, max(1, base // 4))
    return int(min(base + jitter, config.max_delay_ms))


async def with_retry(
    fn: Callable[[], Awaitable[T]],
    config: RetryConfig | None = None,
    *,
    store: str = "_",
    op: str = "request",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails with a non-retriable error, or retries run out."""
    cfg = config or RetryConfig()
    attempt = 0
    while True:
        try:
            return await fn()
        except GatewayError as exc:
            if not exc.retryable:
                raise
            if attempt >= cfg.max_retries:
                emit(
                    ("esdb_gater", "retry", "exhausted"),
                    {"total_attempts": attempt + 1},
                    {"store_id": store, "op": op, "reason": exc.code.value},
                )
                raise RetriesExhaustedError(
                    f"gave up after {attempt + 1} attempts: {exc.message}",
                    details={"attempts": attempt + 1, "last_error": exc.to_envelope()["error"]},
                    last_error=exc,
                ) from exc
            delay = calculate_delay(attempt, cfg)
            attempt += 1
            emit(
                ("esdb_gater", "retry", "attempt"),
                {"delay_ms": delay, "attempt": attempt},
                {"store_id": store, "op": op, "reason": exc.code.value},
            )
            await sleep(delay / 1000)
