"""The shared services: built once by the app's lifespan, used by every request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx2

from gptmini_graphql.auth.accounts import Accounts
from gptmini_graphql.auth.login_throttle import LoginThrottle
from gptmini_graphql.drain import Drain
from gptmini_graphql.llm.client import LLM, build_llm
from gptmini_graphql.llm.local.process import ModelProcess
from gptmini_graphql.rate_limits import RateLimiter
from gptmini_graphql.settings import Settings
from gptmini_graphql.spend.ledger import Ledger
from gptmini_graphql.spend.meter import Spend
from gptmini_graphql.spend.reservations import MemoryReservations, RedisReservations


@dataclass(slots=True)
class Services:
    settings: Settings
    llm: LLM
    accounts: Accounts
    limiter: RateLimiter
    login_throttle: LoginThrottle
    spend: Spend
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
    ) -> Services:
        # The database first: a bad DATABASE_URL fails the start before a
        # model process is spawned.
        accounts = await Accounts.start(settings, clock)
        model_process = None
        local_model_url = settings.local_model_url
        try:
            if settings.backend == "local" and not local_model_url:
                model_process = ModelProcess(settings)
                model_process.start()
                local_model_url = model_process.url
            return await cls._start_with(
                settings,
                llm_http_client,
                local_model_url,
                model_process,
                accounts,
                clock,
                timer,
            )
        except BaseException:
            if model_process is not None:  # no child outlives a failed start
                await asyncio.to_thread(model_process.stop)
            await accounts.aclose()  # nor its flusher task and connections
            raise

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
    ) -> Services:
        llm = build_llm(
            settings, llm_http_client, local_model_url=local_model_url, timer=timer
        )
        await llm.probes.log_at_start()
        if model_process is not None and llm.embedded is not None:
            llm.embedded.explain_outage = model_process.problem
        limiter = RateLimiter(settings.redis_url)
        spend = _spend(settings, accounts, clock)
        return cls(
            settings=settings,
            llm=llm,
            model_process=model_process,
            accounts=accounts,
            limiter=limiter,
            login_throttle=LoginThrottle(limiter, settings),
            spend=spend,
        )

    async def aclose(self) -> None:
        await self.llm.aclose()
        await self.limiter.aclose()
        await self.spend.aclose()  # the ledger's last rows, before the database
        await self.accounts.aclose()
        if self.model_process is not None:
            await asyncio.to_thread(self.model_process.stop)


def _spend(settings: Settings, accounts: Accounts, clock: Callable[[], float]) -> Spend:
    """Budgets in Redis when REDIS_URL is set (every replica one budget),
    else in this process's memory; the ledger in the database."""
    if settings.redis_url:
        import redis.asyncio

        client = redis.asyncio.from_url(
            settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        store = RedisReservations(client)
    else:
        store = MemoryReservations()
    ledger = Ledger(accounts.db)
    ledger.start()
    return Spend(settings, store, ledger, accounts.db, clock)
