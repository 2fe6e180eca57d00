"""Rate limits on the `limits` library: in memory, or in Redis when REDIS_URL is set.

With Redis, every server process sharing it counts against one limit. While
Redis is unreachable (shared_redis.py decides when it is), each limit follows
the outage policy its caller names (from settings):

* `memory`: this process counts by itself, with the same limits, so each
  replica still enforces them (a client spread over N replicas gets up to N
  times the limit; one replica is exact);
* `closed`: refused with RATE_LIMITED until Redis answers again;
* `open`: let through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from gptmini_graphql.errors import RateLimited
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.rate_limit_redis import Charged, RedisWindows, Window
from gptmini_graphql.shared_redis import RedisUnavailable, SharedRedis

OutagePolicy = Literal["memory", "closed", "open"]
T = TypeVar("T")
KEY_PREFIX = "gptmini"


def _redis_storage(redis: SharedRedis) -> RedisStorage:
    """limits' Redis storage on the app's own connection pool: the same
    connections and timeouts, closed with the app's client. (Given a pool,
    limits opens nothing of its own from the URL.)"""
    pool = redis.client.connection_pool
    return RedisStorage(
        "async+" + redis.url,
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        # limits types its options as float | str | bool, yet documents and
        # passes on `connection_pool` (to redis' asyncio client) as it is.
        connection_pool=pool,  # type: ignore[arg-type]
    )


class RateLimiter:
    def __init__(self, metrics: Metrics, redis: SharedRedis | None = None) -> None:
        self.metrics = metrics
        # Sliding window counter: no burst of twice the limit at a window edge,
        # and O(1) per key. (limits' moving window keeps every hit of a day's
        # window and, in memory, sweeps all keys on each hit.)
        self._memory = MemoryStorage()
        self._local = SlidingWindowCounterRateLimiter(self._memory)
        self._redis = redis
        self._shared = (
            SlidingWindowCounterRateLimiter(_redis_storage(redis)) if redis else None
        )
        self._windows = RedisWindows(redis, KEY_PREFIX) if redis else None

    async def hit(
        self,
        limits: list[RateLimitItem],
        *identifiers: str,
        cost: int = 1,
        outage: OutagePolicy = "memory",
        refusal: str | None = None,
    ) -> None:
        """Consume `cost` from every limit, or raise RATE_LIMITED with retryAfter.
        A refusal is counted in /metrics under `refusal` (default: the first
        identifier)."""
        refused = (
            await self.charge(
                limits, *identifiers, cost=cost, outage=outage, refusal=refusal
            )
        ).refusal
        if refused is not None:
            raise refused

    async def charge(
        self,
        limits: list[RateLimitItem],
        *identifiers: str,
        cost: int = 1,
        outage: OutagePolicy = "memory",
        refusal: str | None = None,
    ) -> Charge:
        """`hit` that returns its refusal rather than raising it, with what is
        left of each limit afterwards (as `windows` reads it): with Redis, in
        one round trip."""
        charged = await self._charged(limits, identifiers, cost, outage)
        if not isinstance(charged, Charged):  # Redis is down: refused, or let through
            return Charge([], charged)
        if charged.refused is None:
            return Charge(charged.windows, None)
        item, wait = charged.refused
        self.metrics.rate_limit_refusals.labels(refusal or identifiers[0]).inc()
        per = f"{item.amount} per {item.GRANULARITY.name}"
        message = (
            f"This operation needs {cost} requests but the limit is {per}."
            if wait is None  # it never fits
            else f"Rate limit of {per} reached."
        )
        return Charge(charged.windows, RateLimited(message, retry_after=wait))

    async def _charged(
        self,
        limits: list[RateLimitItem],
        identifiers: tuple[str, ...],
        cost: int,
        outage: OutagePolicy,
    ) -> Charged | RateLimited | None:
        """The charge on Redis, or while it is unreachable as `outage` says:
        in memory, refused (RateLimited) or let through (None)."""
        if self._redis is None or self._windows is None:
            return await _charged_by(self._local, limits, identifiers, cost)
        windows = self._windows
        try:
            return await self._redis.call(
                lambda: windows.charge(limits, identifiers, cost)
            )
        except RedisUnavailable as down:
            if outage == "memory":
                return await _charged_by(self._local, limits, identifiers, cost)
            if outage == "closed":
                return RateLimited(
                    "Limits cannot be checked right now; retry shortly.",
                    retry_after=down.retry_after,
                )
            return None

    async def count(
        self,
        limits: list[RateLimitItem],
        *identifiers: str,
        outage: OutagePolicy = "memory",
    ) -> None:
        """One hit on each of `limits` that has room; refuses nothing."""
        await self._counted(
            lambda limiter: _consume(limiter, limits, identifiers, 1),
            "memory" if outage == "memory" else "open",
        )

    async def reached(
        self,
        limits: list[RateLimitItem],
        *identifiers: str,
        outage: OutagePolicy = "memory",
    ) -> float | None:
        """Seconds until the first of `limits` that is used up has room again,
        or None if all have room; consumes nothing."""

        async def check(limiter: SlidingWindowCounterRateLimiter) -> float | None:
            for item in limits:
                if not await limiter.test(item, *identifiers):
                    return await _reset_in(limiter, item, identifiers)
            return None

        return await self._counted(check, outage)

    async def windows(
        self,
        limits: list[RateLimitItem],
        *identifiers: str,
        outage: OutagePolicy = "memory",
    ) -> list[Window]:
        """Each limit with what is left of it and seconds until it resets
        (empty while its storage is unreachable, unless counted in memory)."""

        async def stats(limiter: SlidingWindowCounterRateLimiter) -> list[Window]:
            return await _windows(limiter, limits, identifiers)

        return (
            await self._counted(stats, "memory" if outage == "memory" else "open") or []
        )

    async def clear(self, limits: list[RateLimitItem], *identifiers: str) -> None:
        """Forget every hit on `limits` (best effort while Redis is down)."""

        async def forget(limiter: SlidingWindowCounterRateLimiter) -> None:
            for item in limits:
                await limiter.clear(item, *identifiers)

        await self._counted(forget, "memory")

    async def _counted(
        self,
        operation: Callable[[SlidingWindowCounterRateLimiter], Awaitable[T | None]],
        outage: OutagePolicy,
    ) -> T | None:
        """`operation` on Redis, or while it is unreachable, as `outage` says.
        Returns what `operation` does: None means "let it through"."""
        if self._shared is None or self._redis is None:
            return await operation(self._local)
        shared = self._shared
        try:
            return await self._redis.call(lambda: operation(shared))
        except RedisUnavailable as down:
            if outage == "memory":
                return await operation(self._local)
            if outage == "closed":
                raise RateLimited(
                    "Limits cannot be checked right now; retry shortly.",
                    retry_after=down.retry_after,
                ) from None
            return None

    async def aclose(self) -> None:
        # `limits` has no public close: end its expiry task ourselves so
        # shutdown leaves no pending task behind. (The Redis pool is the app's.)
        if self._memory.timer is not None:
            self._memory.timer.cancel()


@dataclass(frozen=True, slots=True)
class Charge:
    """What is left of each limit (empty while unknown), and the refusal, if
    the charge was refused."""

    windows: list[Window]
    refusal: RateLimited | None


async def _charged_by(
    limiter: SlidingWindowCounterRateLimiter,
    limits: list[RateLimitItem],
    identifiers: tuple[str, ...],
    cost: int,
) -> Charged:
    refused = await _consume(limiter, limits, identifiers, cost)
    return Charged(refused, await _windows(limiter, limits, identifiers))


async def _windows(
    limiter: SlidingWindowCounterRateLimiter,
    limits: list[RateLimitItem],
    identifiers: tuple[str, ...],
) -> list[Window]:
    found = []
    for item in limits:
        window = await limiter.get_window_stats(item, *identifiers)
        reset = max(window.reset_time - time.time(), 0.0)
        found.append((item, max(window.remaining, 0), reset))
    return found


async def _consume(
    limiter: SlidingWindowCounterRateLimiter,
    limits: list[RateLimitItem],
    identifiers: tuple[str, ...],
    cost: int,
) -> tuple[RateLimitItem, float | None] | None:
    """The first limit without room for `cost`, and when it has room again
    (None: never, `cost` is over the limit itself); None if all had room."""
    for item in limits:
        if not await limiter.hit(item, *identifiers, cost=cost):
            if cost > item.amount:
                return item, None
            return item, await _reset_in(limiter, item, identifiers)
    return None


async def _reset_in(
    limiter: SlidingWindowCounterRateLimiter,
    item: RateLimitItem,
    identifiers: tuple[str, ...],
) -> float:
    stats = await limiter.get_window_stats(item, *identifiers)
    return max(stats.reset_time - time.time(), 0.0)
