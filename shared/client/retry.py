"""Retry with exponential backoff and jitter (SPEC.md §10, the seed's ``esdb_gater_retry``).

``delay(n) = min(base·2^n + jitter, max)`` with jitter uniform in ``[1, max(1, base·2^n / 4)]``
milliseconds; defaults 100 ms, 30 000 ms, 10 retries (11 calls in all). Only errors whose
``retryable`` flag is set (``timeout``, ``unavailable``, ``rate_limited``) are retried; any other
error (``wrong_expected_version``, ``stream_not_found``, ``not_found``, …) returns at once.
When the retries run out, ``RetriesExhaustedError`` carries the last error.

Every retry and every give-up is observable: ``esdb_gater.shared.core.telemetry.emit`` calls the in-process
handlers attached with ``attach`` and counts them in OpenTelemetry metrics (docs/telemetry.md).

``default_config()`` is the policy ``GaterClient`` uses unless given one: the ``retry`` settings
(``ESDB_GATER_RETRY__MAX_ATTEMPTS`` …, the seed's key names). ``max_attempts`` there is
``RetryConfig.max_retries``: the number of retries after the first call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from esdb_gater.shared.core.errors import GatewayError, RetriesExhaustedError
from esdb_gater.shared.core.telemetry import RETRY_ATTEMPT, RETRY_EXHAUSTED, emit

__all__ = ["RetryConfig", "calculate_delay", "default_config", "new_config", "with_retry"]

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    base_delay_ms: int = 100
    max_delay_ms: int = 30_000
    max_retries: int = 10

    @property
    def max_attempts(self) -> int:
        """The seed's name for ``max_retries`` (settings key ``retry.max_attempts``)."""
        return self.max_retries


def default_config() -> RetryConfig:
    """The seed's ``default_config()``: the ``retry`` settings (environment ``ESDB_GATER_RETRY__*``
    and the ``ESDB_GATER_CONFIG`` file), read now."""
    from pydantic import ValidationError

    from esdb_gater.shared.core.settings import Settings

    try:
        r = Settings().retry
    except ValidationError as exc:
        if any(e["loc"] and e["loc"][0] == "retry" for e in exc.errors()):
            raise
        # a service setting a client does not use is invalid: that must not break the client
        log.warning("invalid settings (%d errors, none in retry.*): the client uses retry defaults", exc.error_count())
        return RetryConfig()
    return RetryConfig(base_delay_ms=r.base_delay_ms, max_delay_ms=r.max_delay_ms, max_retries=r.max_attempts)


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
                    RETRY_EXHAUSTED,
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
                RETRY_ATTEMPT,
                {"delay_ms": delay, "attempt": attempt},
                {"store_id": store, "op": op, "reason": exc.code.value},
            )
            await sleep(delay / 1000)
