"""Usage and budgets in the schema: what the ledger says a user (or, for
admins, everyone) used in a period, and the budgets that bind them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.spend import usage as ledger_usage
from gptmini_graphql.spend.budgets import window

Context = Info[RequestContext, None]


@strawberry.enum(description="What a usage breakdown groups the ledger's calls by.")
class UsageGroup(Enum):
    DAY = "day"  # UTC, YYYY-MM-DD
    MODEL = "model"
    FIELD = "field"  # summarize, translate, complete, analyze, completeStream
    OPERATION = "operation"  # the client's operation name (null: anonymous)
    API_KEY = "api_key"  # the key's id (null: a logged-in session)
    USER = "user"  # the user's id


def _totals(totals: ledger_usage.Totals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "cached_answers": totals.cached_answers,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cached_tokens": totals.cached_tokens,
        "cost_usd": totals.cost_usd,
        "unpriced_requests": totals.unpriced,
    }


@strawberry.interface(description="Calls to the model and what they used.")
class UsageTotals:
    requests: int = strawberry.field(
        description="Calls to the model, failed ones and cached answers included."
    )
    cached_answers: int = strawberry.field(
        description="Of them, answers from the response cache: cost 0, no tokens."
    )
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = strawberry.field(
        description="Prompt tokens the provider served from its prompt cache."
    )
    cost_usd: float
    unpriced_requests: int = strawberry.field(
        description="Calls to models with no price in the server's table: not in costUsd."
    )


@strawberry.type
class UsageLine(UsageTotals):
    key: str | None = strawberry.field(
        description="The group's value (a day, model, field, operation name, "
        "API key id or user id); null: none (a session, an anonymous operation)."
    )


@strawberry.type(description="The ledger summed over [from, to).")
class UsageReport(UsageTotals):
    from_: datetime = strawberry.field(name="from")
    to: datetime
    user_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The same calls, grouped.")
    async def breakdown(self, info: Context, by: UsageGroup) -> list[UsageLine]:
        if by is UsageGroup.USER and self.user_id is not None:
            raise BadUserInput("A user's usage has one user: group by something else.")
        rows = await ledger_usage.breakdown(
            info.context.services.accounts.db,
            by.value,
            self.user_id,
            self.from_,
            self.to,
        )
        return [UsageLine(key=key, **_totals(totals)) for key, totals in rows]


async def usage_report(
    context: RequestContext,
    user_id: uuid.UUID | None,
    start: datetime | None,
    end: datetime | None,
) -> UsageReport:
    """The period defaults to the current calendar month (UTC)."""
    services = context.services
    month_start, month_end = window("month", services.spend.clock())
    start, end = _aware(start) or month_start, _aware(end) or month_end
    if end <= start:
        raise BadUserInput("`to` must be later than `from`.")
    await services.spend.ledger.flush()  # this server's latest calls first
    totals = await ledger_usage.totals(services.accounts.db, user_id, start, end)
    return UsageReport(from_=start, to=end, user_id=user_id, **_totals(totals))


def _aware(at: datetime | None) -> datetime | None:
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


@strawberry.type(description="Budgets, per user or per API key; null: unlimited.")
class Budgets:
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    tokens_per_minute: int | None = strawberry.field(
        default=None, description="The token rate limit (users only)."
    )

    @classmethod
    def of(cls, values: dict[str, float | int]) -> Budgets:
        # The names are BUDGETS' (checked where they are set), each a field here.
        return cls(**values)  # type: ignore[arg-type]


@strawberry.input(
    description="Budgets to change: a number sets one, null removes it (a user's "
    "then falls back to the server's default), a field left out stays as it is."
)
class BudgetsInput:
    usd_per_day: float | None = strawberry.UNSET
    usd_per_month: float | None = strawberry.UNSET
    tokens_per_day: int | None = strawberry.UNSET
    tokens_per_minute: int | None = strawberry.UNSET
    tokens_per_month: int | None = strawberry.UNSET

    def changes(self) -> dict[str, float | int | None]:
        return {
            name: value
            for name, value in vars(self).items()
            if value is not strawberry.UNSET
        }
