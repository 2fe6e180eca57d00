"""Rate limits on the `limits` library: in memory, or in Redis when REDIS_URL is set.

With Redis, every server process sharing it counts against one limit.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from gptmini_graphql import metrics
from gptmini_graphql.circuit_breaker import CircuitBreaker
from gptmini_graphql.errors import RateLimited

logger = logging.getLogger("gptmini_graphql.rate_limits")

STORAGE_RETRY_SECONDS = 5.0


def _storage(redis_url: str | None) -> Storage:
    if redis_url is None:
        return MemoryStorage()
    storage = storage_from_string(
        "async+" + redis_url,
        implementation="redispy",
        key_prefix="gptmini",
        wrap_exceptions=True,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    assert isinstance(storage, Storage)
    return storage


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self.storage = _storage(redis_url)
        self._storage_breaker = CircuitBreaker(1, STORAGE_RETRY_SECONDS)
        # Sliding window counter: no burst of twice the limit at a window edge,
        # and O(1) per key. (limits' moving window keeps every hit of a day's
        # window and, in memory, sweeps all keys on each hit.)
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(
        self, limits: list[RateLimitItem], *identifiers: str, cost: int = 1
    ) -> None:
        """Consume `cost` from every limit, or raise RATE_LIMITED with retryAfter."""
        if not self._storage_breaker.allow():
            return  # the storage failed a moment ago: let requests through
        for item in limits:
            try:
                allowed = await self._limiter.hit(item, *identifiers, cost=cost)
                self._storage_breaker.succeeded()
                if allowed:
                    continue
                stats = await self._limiter.get_window_stats(item, *identifiers)
            except StorageError:
                # A broken Redis must not take the API down with it: let
                # requests through for a while, and say so (once a while).
                self._storage_breaker.failed()
                logger.warning(
                    "rate limit storage failed; requests let through",
                    exc_info=True,
                    extra={"retry_in_s": STORAGE_RETRY_SECONDS},
                )
                return
            metrics.RATE_LIMIT_REFUSALS.labels(identifiers[0]).inc()
            if cost > item.amount:
                raise RateLimited(
                    f"This operation needs {cost} requests but the limit is "
                    f"{item.amount} per {item.GRANULARITY.name}."
                )
            raise RateLimited(
                f"Rate limit of {item.amount} per {item.GRANULARITY.name} reached.",
                retry_after=stats.reset_time - time.time(),
            )

    async def aclose(self) -> None:
        # `limits` has no public close: end its expiry task or Redis pool ourselves
        # so shutdown leaves no pending task or open socket behind.
        if isinstance(self.storage, MemoryStorage):
            if self.storage.timer is not None:
                self.storage.timer.cancel()
        else:
            await self.storage.bridge.storage.aclose()  # type: ignore[attr-defined]
