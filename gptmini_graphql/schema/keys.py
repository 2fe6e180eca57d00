"""API keys: created by a logged-in user (the secret shown once), revoked
by their owner or an admin."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.schema.accounts import ApiKey, CreatedApiKey, parse_id
from gptmini_graphql.schema.usage import BudgetsInput

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

    @strawberry.mutation(
        description="Set one of your keys' own budgets, within your own (admins: "
        "anyone's key). tokensPerMinute applies to users only."
    )
    async def set_api_key_budgets(
        self, info: Context, id: strawberry.ID, budgets: BudgetsInput
    ) -> ApiKey:
        # A key must not lift its own budget: owners need a logged-in session.
        caller = info.context.require_user()
        if not caller.is_admin:
            caller = info.context.require_session()
        changes = budgets.changes()
        if changes.get("tokens_per_minute") is not None:
            raise BadUserInput("tokensPerMinute is a limit per user, not per key.")
        keys = info.context.services.accounts.api_keys
        owner = None if caller.is_admin else caller.user_id
        return ApiKey.of(
            await keys.set_budgets(owner, parse_id(id, "API key"), changes)
        )
