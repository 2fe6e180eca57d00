"""An exact-match cache of deterministic LLM answers: in memory by default,
in Redis when REDIS_URL is set (so replicas share it).

Only requests at temperature 0 are cached: any other answer is meant to vary.
The key covers everything that changes the answer (upstream, model, messages,
temperature, max tokens, stop, response format) plus a version, and is scoped
to the caller unless CACHE_SCOPE=shared. Concurrent identical requests make
one upstream call (single flight). An unreachable Redis steps aside: the
request goes upstream, and the outage is logged once (shared_redis.py) and
counted here (`gptmini_cache_errors_total`), never returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cachetools import TTLCache

from gptmini_graphql.shared_redis import RedisUnavailable, SharedRedis

if TYPE_CHECKING:
    from gptmini_graphql.metrics import Metrics
    from gptmini_graphql.tracing import Tracing

logger = logging.getLogger("gptmini_graphql.cache")

# Bump when what is stored, or how a key is made, changes (2: pickled, not
# JSON: see `ResponseCache.key`).
CACHE_VERSION = 2
REDIS_PREFIX = f"gptmini:cache:v{CACHE_VERSION}:"

Mode = Literal["use", "refresh", "bypass"]

# Fixed, not pickle's default: a key must not change with the Python version.
_PICKLE_PROTOCOL = 5


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How one request uses the cache: whose entries, and whether to read."""

    scope: str  # the user, or "*" when entries are shared
    mode: Mode = "use"


class ResponseCache:
    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        redis: SharedRedis | None = None,
        metrics: Metrics,
        tracing: Tracing,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.ttl_seconds = ttl_seconds
        # In memory (no Redis): the most recently used, each for its TTL.
        self._memory: TTLCache[str, dict[str, Any]] = TTLCache(
            max_entries, ttl_seconds, timer=time.monotonic
        )
        self._redis = redis
        self._in_flight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[asyncio.Future[dict[str, Any]], int] = {}

    @staticmethod
    def key(policy: CachePolicy, upstream: str, body: dict[str, Any]) -> str:
        """The SHA-256 of what the answer depends on, pickled: as exact as
        its JSON was (unpickling gives that very value back, so two that
        differ never share a key; one whose dicts are built in another order
        gets another key, a miss), at a third of the cost (JSON's encoder,
        which escapes the texts character by character, was 5% of a cache
        hit's instructions). Only dumped, never loaded."""
        material = {
            "v": CACHE_VERSION,
            "scope": policy.scope,
            "upstream": upstream,
            "body": body,
        }
        pickled = io.BytesIO()
        pickler = pickle.Pickler(pickled, _PICKLE_PROTOCOL)
        # No memo: with it, a text that is one object in two places (one
        # variable given to two arguments) is pickled as a reference the
        # second time, so the key would depend on which objects are shared,
        # not on the value alone (the material has no cycles to guard).
        pickler.fast = True
        pickler.dump(material)
        return hashlib.sha256(pickled.getbuffer()).hexdigest()

    async def get(self, key: str) -> dict[str, Any] | None:
        if self._redis is None:
            return self._memory.get(key)
        line = self._redis.line  # the app's pipelined line (shared_redis.py)
        try:
            raw = await self._redis.call(
                lambda: line.command("GET", REDIS_PREFIX + key)
            )
        except RedisUnavailable:
            self.metrics.cache_errors.labels("read").inc()
            return None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            self.metrics.cache_errors.labels("decode").inc()
            logger.warning("response cache entry unreadable; answering without it")
            return None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if self._redis is None:
            self._memory[key] = value
            return
        client, raw = self._redis.client, json.dumps(value)
        ttl = max(1, int(self.ttl_seconds))
        try:
            await self._redis.call(lambda: client.set(REDIS_PREFIX + key, raw, ex=ttl))
        except RedisUnavailable:
            self.metrics.cache_errors.labels("write").inc()

    async def fetch(
        self,
        key: str,
        mode: Mode,
        produce: Callable[[], Awaitable[dict[str, Any]]],
    ) -> tuple[dict[str, Any], bool]:
        """The entry for `key` and whether it was served without asking
        upstream (from the cache, or from another request's call in flight)."""
        if mode == "use" and (found := await self._lookup(key)) is not None:
            self.metrics.cache_hit.inc()
            return found, True
        if (running := self._in_flight.get(key)) is not None:
            self.metrics.cache_coalesced.inc()
            return await self._share(running), True
        self.metrics.cache_miss.inc()
        # A task of its own: a leader that gives up must not fail its followers.
        call = asyncio.ensure_future(self._produce_and_store(key, produce))
        self._in_flight[key] = call
        call.add_done_callback(lambda _: self._done(key, call))
        return await self._share(call), False

    async def _share(self, call: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """Wait for a call that other requests may be waiting for too. When
        the last of them gives up (its client left), the call is cancelled,
        so the model stops generating an answer nobody will read."""
        self._waiters[call] = self._waiters.get(call, 0) + 1
        try:
            return await asyncio.shield(call)
        finally:
            self._waiters[call] -= 1
            if not self._waiters[call]:
                del self._waiters[call]
                if not call.done():
                    call.cancel()

    async def _produce_and_store(
        self, key: str, produce: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        value = await produce()
        await self.set(key, value)
        return value

    def _done(self, key: str, call: asyncio.Future[dict[str, Any]]) -> None:
        self._in_flight.pop(key, None)
        if not call.cancelled():
            call.exception()  # retrieved: its callers, if any are left, raise it

    async def _lookup(self, key: str) -> dict[str, Any] | None:
        backend = "memory" if self._redis is None else "redis"
        attributes = {"gptmini.cache.backend": backend}
        with self.tracing.span("cache lookup", attributes) as span:
            found = await self.get(key)
            self.tracing.annotate(span, **{"gptmini.cache.hit": found is not None})
        return found
