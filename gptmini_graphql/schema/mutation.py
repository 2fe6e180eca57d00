"""Sessions: log in for an access token and a refresh token, refresh, log
out, change a password."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from gptmini_graphql.auth.sessions import Refreshed
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import BadUserInput, Unauthenticated
from gptmini_graphql.services import Services
from gptmini_graphql.settings import Settings

Context = Info[RequestContext, None]


@strawberry.type
class LoginPayload:
    access_token: str = strawberry.field(
        description="Send it as 'Authorization: Bearer <accessToken>'."
    )
    token_type: str
    expires_at: datetime
    expires_in: int = strawberry.field(description="Seconds until the token expires.")
    refresh_token: str = strawberry.field(
        description="Exchange it with `refresh` for new tokens; each works once."
    )
    refresh_expires_at: datetime


def _payload(services: Services, session: Refreshed) -> LoginPayload:
    settings: Settings = services.settings
    token = services.accounts.tokens.issue(session.user_id, session.session_id)
    return LoginPayload(
        access_token=token.token,
        token_type="Bearer",
        expires_at=token.expires_at,
        expires_in=settings.jwt_ttl_seconds,
        refresh_token=session.refresh_token,
        refresh_expires_at=session.refresh_expires_at,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Exchange a username and password for an access token "
        "(minutes) and a refresh token (days)."
    )
    async def login(self, info: Context, username: str, password: str) -> LoginPayload:
        context = info.context
        services = context.services
        throttle, address = services.login_throttle, context.client_address
        await throttle.admit(address, username)
        accounts = services.accounts
        user = await accounts.users.authenticate(username, password)
        if user is None:
            await throttle.failed(address, username)
            raise Unauthenticated("Invalid username or password.")
        await throttle.succeeded(address, username)
        return _payload(services, await accounts.sessions.start(user.id))

    @strawberry.mutation(
        description="New tokens for a refresh token, which stops working. Using "
        "one twice ends its session: a copy is in someone else's hands."
    )
    async def refresh(self, info: Context, refresh_token: str) -> LoginPayload:
        services = info.context.services
        return _payload(
            services, await services.accounts.sessions.rotate(refresh_token)
        )

    @strawberry.mutation(
        description="End a session: the refresh token's, or else the caller's own."
    )
    async def logout(self, info: Context, refresh_token: str | None = None) -> bool:
        sessions = info.context.services.accounts.sessions
        if refresh_token is not None:
            await sessions.revoke_by_token(refresh_token)
            return True
        caller = info.context.require_user()
        if caller.session_id is None:
            raise BadUserInput(
                "An API key has no session: revoke it with revokeApiKey."
            )
        await sessions.revoke(caller.session_id, "logout")
        return True

    @strawberry.mutation(
        description="Set a new password. Every session of the user ends: log in again."
    )
    async def change_password(
        self, info: Context, current_password: str, new_password: str
    ) -> bool:
        context = info.context
        caller = context.require_session()
        users = context.services.accounts.users
        # Guessing the current password here is guessing a login: same throttle.
        throttle, address = context.services.login_throttle, context.client_address
        await throttle.admit(address, caller.username)
        if await users.authenticate(caller.username, current_password) is None:
            await throttle.failed(address, caller.username)
            raise BadUserInput("The current password is wrong.")
        await throttle.succeeded(address, caller.username)
        await users.set_password(caller.username, new_password)
        return True
