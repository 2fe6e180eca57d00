"""Logging in: a username and password for an access token."""

from __future__ import annotations

import hashlib
from datetime import datetime

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import Unauthenticated


@strawberry.type
class LoginPayload:
    access_token: str = strawberry.field(
        description="Send it as 'Authorization: Bearer <accessToken>'."
    )
    token_type: str
    expires_at: datetime
    expires_in: int = strawberry.field(description="Seconds until the token expires.")


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Exchange a username and password for a token.")
    async def login(
        self, info: Info[RequestContext, None], username: str, password: str
    ) -> LoginPayload:
        context = info.context
        services = context.services
        limits = services.settings.login_rate_limits
        # Per address against one guesser; per username against a guessing farm.
        outage = services.settings.login_rate_limit_redis_outage
        await services.limiter.hit(
            limits, "login-address", context.client_address, outage=outage
        )
        username_key = hashlib.sha256(
            username.encode("utf-8", "surrogatepass")
        ).hexdigest()
        await services.limiter.hit(limits, "login-user", username_key, outage=outage)
        if not services.users.authenticate(username, password):
            raise Unauthenticated("Invalid username or password.")
        token = services.tokens.issue(username)
        return LoginPayload(
            access_token=token.token,
            token_type="Bearer",
            expires_at=token.expires_at,
            expires_in=services.settings.jwt_ttl_seconds,
        )
