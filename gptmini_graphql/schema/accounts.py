"""The account types: users and their API keys (never a key's secret)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from gptmini_graphql.auth.api_keys import KeyInfo
from gptmini_graphql.auth.principal import Role
from gptmini_graphql.auth.users import UserInfo
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import BadUserInput, Forbidden
from gptmini_graphql.schema.usage import Budgets, UsageReport, usage_report
from gptmini_graphql.spend.budgets import effective

# The accounts' own Role in the schema: strawberry.enum registers the class in
# place (and returns it), so resolvers and the type checker see one type.
strawberry.enum(Role, description="What a user may do: admins manage users.")


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(
        description="The key's first characters, to tell keys apart."
    )
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="Recorded once a minute, not at every request."
    )
    expires_at: datetime | None
    revoked_at: datetime | None
    budgets: Budgets = strawberry.field(
        description="This key's own budgets, within its user's (null: none)."
    )

    @classmethod
    def of(cls, key: KeyInfo) -> ApiKey:
        return cls(
            budgets=Budgets.of(key.budgets or {}),
            id=strawberry.ID(str(key.id)),
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


@strawberry.type
class User:
    id: strawberry.ID
    username: str
    role: Role
    disabled: bool
    created_at: datetime
    rate_limit: str | None = strawberry.field(
        description="This user's own rate limit; null: the server's default."
    )
    user_id: strawberry.Private[uuid.UUID]
    overrides: strawberry.Private[dict[str, float | int] | None]

    @classmethod
    def of(cls, user: UserInfo) -> User:
        return cls(
            overrides=user.budgets,
            id=strawberry.ID(str(user.id)),
            username=user.username,
            role=user.role,
            disabled=user.disabled,
            created_at=user.created_at,
            rate_limit=user.rate_limit,
            user_id=user.id,
        )

    @strawberry.field(
        description="The budgets that bind this user: their own where an admin "
        "set them, else the server's defaults (null: unlimited)."
    )
    def budgets(self, info: Info[RequestContext, None]) -> Budgets:
        self._may_see(info)
        spend = info.context.services.spend
        return Budgets.of(effective(self.overrides, spend.defaults))

    @strawberry.field(
        description="What this user's calls to the model used in [from, to) "
        "(default: this calendar month, UTC), from the usage ledger."
    )
    async def usage(
        self,
        info: Info[RequestContext, None],
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> UsageReport:
        self._may_see(info)
        return await usage_report(info.context, self.user_id, from_, to)

    def _may_see(self, info: Info[RequestContext, None]) -> None:
        caller = info.context.require_user()
        if caller.user_id != self.user_id and not caller.is_admin:
            raise Forbidden("Only an admin may see another user's usage and budgets.")

    @strawberry.field(description="This user's API keys, revoked ones included.")
    async def api_keys(self, info: Info[RequestContext, None]) -> list[ApiKey]:
        caller = info.context.require_user()
        if caller.user_id != self.user_id and not caller.is_admin:
            raise Forbidden("Only an admin may see another user's keys.")
        accounts = info.context.services.accounts
        # This replica's unwritten last-used times first.
        await accounts.identities.last_used.flush()
        return [ApiKey.of(key) for key in await accounts.api_keys.list(self.user_id)]


@strawberry.type
class CreatedApiKey:
    key: str = strawberry.field(
        description="The secret: shown this once, never again. Send it as "
        "'Authorization: Bearer <key>'."
    )
    api_key: ApiKey


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadUserInput(f"No such {what}.") from None
