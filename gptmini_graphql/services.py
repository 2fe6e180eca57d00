"""The shared services: built once by the app's lifespan, used by every request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx2

from gptmini_graphql.auth.accounts import Accounts
from gptmini_graphql.auth.login_throttle import LoginThrottle
from gptmini_graphql.drain import Drain
from gptmini_graphql.llm.building import build_llm
from gptmini_graphql.llm.client import LLM
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.persisted_queries import PersistedQueries
from gptmini_graphql.rate_limits import RateLimiter
from gptmini_graphql.settings import Settings
from gptmini_graphql.shared_redis import SharedRedis
from gptmini_graphql.spend.enforcement import Spend
from gptmini_graphql.spend.ledger import Ledger
from gptmini_graphql.spend.redis_reservations import RedisReservations
from gptmini_graphql.spend.reservations import MemoryReservations
from gptmini_graphql.tracing import Tracing

if TYPE_CHECKING:
    # Imported where a model process is started: a server with a remote
    # upstream or LOCAL_MODEL_URL never loads the supervisor (0.5 MB).
    from gptmini_graphql.llm.local.process import ModelProcess


@dataclass(slots=True)
class Services:
    settings: Settings
    llm: LLM
    accounts: Accounts
    limiter: RateLimiter
    login_throttle: LoginThrottle
    spend: Spend
    # This app's own (never the process's): /metrics and the trace spans.
    metrics: Metrics
    tracing: Tracing
    # The one Redis client (REDIS_URL): rate limits, response cache,
    # persisted queries and budgets use it, and its one outage policy
    # (shared_redis.py).
    redis: SharedRedis | None = None
    # The endpoint's persisted queries, kept in `redis` while the app runs.
    persisted_queries: PersistedQueries = field(default_factory=PersistedQueries)
    # The embedded model's process, when this app supervises it (no
    # LOCAL_MODEL_URL: nothing else runs one).
    model_process: ModelProcess | None = None
    drain: Drain = field(default_factory=Drain)  # streams at shutdown

    @classmethod
    async def start(
        cls,
        settings: Settings,
        llm_http_client: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        persisted_queries: PersistedQueries | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> Services:
        """`persisted_queries`, `metrics` and `tracing`: the app's, made with
        it (its endpoint, middleware and routes use them too); by default,
        ones of these services' own."""
        metrics = metrics or Metrics()
        tracing = tracing or Tracing()
        # The database first: a bad DATABASE_URL fails the start before a
        # model process is spawned.
        accounts = await Accounts.start(settings, clock)
        model_process = None
        local_model_url = settings.local_model_url
        # Connects at its first command, on this event loop.
        redis = (
            SharedRedis(settings.redis_url, metrics, timer=timer)
            if settings.redis_url
            else None
        )
        try:
            if settings.backend == "local" and not local_model_url:
                from gptmini_graphql.llm.local.process import ModelProcess

                model_process = ModelProcess(settings)
                model_process.start()
                local_model_url = model_process.url
            services = await cls._start_with(
                settings,
                llm_http_client,
                local_model_url,
                model_process,
                accounts,
                clock,
                timer,
                redis,
                metrics,
                tracing,
            )
        except BaseException:
            if model_process is not None:  # no child outlives a failed start
                await asyncio.to_thread(model_process.stop)
            await accounts.aclose()  # nor its flusher task and connections
            if redis is not None:
                await redis.aclose()
            raise
        if persisted_queries is not None:
            services.persisted_queries = persisted_queries
        services.persisted_queries.share_through(redis)
        return services

    @classmethod
    async def _start_with(
        cls,
        settings: Settings,
        llm_http_client: httpx2.AsyncClient | None,
        local_model_url: str | None,
        model_process: ModelProcess | None,
        accounts: Accounts,
        clock: Callable[[], float],
        timer: Callable[[], float],
        redis: SharedRedis | None,
        metrics: Metrics,
        tracing: Tracing,
    ) -> Services:
        llm = build_llm(
            settings,
            llm_http_client,
            local_model_url=local_model_url,
            timer=timer,
            redis=redis,
            metrics=metrics,
            tracing=tracing,
        )
        await llm.probes.log_at_start()
        if model_process is not None and llm.embedded is not None:
            llm.embedded.explain_outage = model_process.problem
        limiter = RateLimiter(metrics, redis)
        spend = _spend(settings, accounts, clock, metrics, redis)
        return cls(
            settings=settings,
            llm=llm,
            model_process=model_process,
            accounts=accounts,
            limiter=limiter,
            login_throttle=LoginThrottle(limiter, settings),
            spend=spend,
            metrics=metrics,
            tracing=tracing,
            redis=redis,
        )

    async def aclose(self) -> None:
        await self.llm.aclose()
        await self.limiter.aclose()
        await self.spend.aclose()  # the ledger's last rows, before the database
        self.persisted_queries.share_through(None)
        if self.redis is not None:
            await self.redis.aclose()
        await self.accounts.aclose()
        self.tracing.flush()
        self.metrics.close()
        if self.model_process is not None:
            await asyncio.to_thread(self.model_process.stop)


def _spend(
    settings: Settings,
    accounts: Accounts,
    clock: Callable[[], float],
    metrics: Metrics,
    redis: SharedRedis | None,
) -> Spend:
    """Budgets in the app's Redis when REDIS_URL is set (every replica one
    budget), else in this process's memory; the ledger in the database."""
    store = RedisReservations(redis) if redis is not None else MemoryReservations()
    ledger = Ledger(accounts.db, metrics)
    ledger.start()
    return Spend(settings, store, ledger, accounts.db, metrics, clock)
