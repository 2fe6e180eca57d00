"""The shared services: built once by the app's lifespan, used by every request."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from gptmini_graphql.auth.tokens import TokenService
from gptmini_graphql.auth.users import SettingsUserStore
from gptmini_graphql.llm.client import LLM, build_llm
from gptmini_graphql.rate_limits import RateLimiter
from gptmini_graphql.settings import Settings
from gptmini_graphql.tasks import RESPONSE_SCHEMAS


@dataclass(slots=True)
class Services:
    settings: Settings
    llm: LLM
    tokens: TokenService
    users: SettingsUserStore
    limiter: RateLimiter

    @classmethod
    async def start(
        cls, settings: Settings, llm_http_client: httpx2.AsyncClient | None = None
    ) -> Services:
        llm = build_llm(settings, llm_http_client, warm_up_schemas=RESPONSE_SCHEMAS)
        await llm.start()
        return cls(
            settings=settings,
            llm=llm,
            tokens=TokenService(
                settings.jwt_secret.get_secret_value(), settings.jwt_ttl_seconds
            ),
            users=SettingsUserStore(settings.fake_username, settings.fake_password),
            limiter=RateLimiter(settings.redis_url),
        )

    async def aclose(self) -> None:
        await self.llm.aclose()
        await self.limiter.aclose()
