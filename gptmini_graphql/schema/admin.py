"""Admin operations: refused with FORBIDDEN for everyone else."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from gptmini_graphql.auth.principal import Role
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.schema.accounts import User
from gptmini_graphql.schema.usage import BudgetsInput, UsageReport, usage_report

Context = Info[RequestContext, None]


@strawberry.type
class AdminQuery:
    @strawberry.field(description="Every user (admins only).")
    async def users(self, info: Context) -> list[User]:
        info.context.require_admin()
        accounts = info.context.services.accounts
        return [User.of(user) for user in await accounts.users.all()]

    @strawberry.field(
        description="Every user's calls to the model in [from, to) (default: this "
        "calendar month, UTC); break it down by USER to compare (admins only)."
    )
    async def usage(
        self,
        info: Context,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> UsageReport:
        info.context.require_admin()
        return await usage_report(info.context, None, from_, to)


@strawberry.type
class AdminMutation:
    @strawberry.mutation(description="Add a user (admins only).")
    async def create_user(
        self,
        info: Context,
        username: str,
        password: str,
        role: Role = Role.USER,
    ) -> User:
        info.context.require_admin()
        users = info.context.services.accounts.users
        return User.of(await users.create(username, password, role.value))

    @strawberry.mutation(
        description="Set a user's own budgets in place of the server's defaults "
        "(admins only). Other servers apply them within AUTH_CACHE_TTL_SECONDS."
    )
    async def set_budgets(
        self, info: Context, username: str, budgets: BudgetsInput
    ) -> User:
        info.context.require_admin()
        users = info.context.services.accounts.users
        return User.of(await users.set_budgets(username, budgets.changes()))

    @strawberry.mutation(
        description="Change a user's role, disable or enable them (disabling ends "
        "their sessions and stops their keys), or set their own rate limit "
        "('100/minute;5000/day'; null: the server's default). Admins only."
    )
    async def update_user(
        self,
        info: Context,
        username: str,
        role: Role | None = None,
        disabled: bool | None = None,
        rate_limit: str | None = strawberry.UNSET,
    ) -> User:
        caller = info.context.require_admin()
        if username == caller.username and (
            disabled or (role is not None and role.value != "admin")
        ):
            # The last admin must not lock everyone out by mistake.
            raise BadUserInput("Admins cannot disable or demote themselves.")
        users = info.context.services.accounts.users
        updated = await users.update(
            username,
            role=role.value if role is not None else None,
            disabled=disabled,
            # Left out: unchanged; null: back to the default.
            rate_limit=None if rate_limit is strawberry.UNSET else rate_limit,
            clear_rate_limit=rate_limit is None,
        )
        return User.of(updated)
