"""API keys: created by a logged-in user (the secret shown once), revoked
by their owner or an admin."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.schema.accounts import ApiKey, CreatedApiKey, parse_id

Context = Info[RequestContext, None]


@strawberry.type
class KeyMutation:
    @strawberry.mutation(
        description="A new API key for the caller; it works wherever an access "
        "token does, until it expires or is revoked."
    )
    async def create_api_key(
        self, info: Context, name: str, expires_at: datetime | None = None
    ) -> CreatedApiKey:
        caller = info.context.require_session()
        keys = info.context.services.accounts.api_keys
        key, secret = await keys.create(caller.user_id, name, expires_at)
        return CreatedApiKey(key=secret, api_key=ApiKey.of(key))

    @strawberry.mutation(description="Revoke one of your keys (admins: anyone's).")
    async def revoke_api_key(self, info: Context, id: strawberry.ID) -> ApiKey:
        caller = info.context.require_user()
        keys = info.context.services.accounts.api_keys
        owner = None if caller.is_admin else caller.user_id
        return ApiKey.of(await keys.revoke(owner, parse_id(id, "API key")))
