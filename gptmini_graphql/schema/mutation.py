"""Logging in: a username and password for an access token."""

from __future__ import annotations

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
        throttle, address = services.login_throttle, context.client_address
        await throttle.admit(address, username)
        if not services.users.authenticate(username, password):
            await throttle.failed(address, username)
            raise Unauthenticated("Invalid username or password.")
        await throttle.succeeded(address, username)
        token = services.tokens.issue(username)
        return LoginPayload(
            access_token=token.token,
            token_type="Bearer",
            expires_at=token.expires_at,
            expires_in=services.settings.jwt_ttl_seconds,
        )
