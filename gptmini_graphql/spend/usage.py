"""The ledger summed: totals for a period, and broken down by day, model,
field, operation, API key or user. Integer sums (tokens, nano-dollars), so
the totals are the ledger's to the last row.

Tokens count what the upstream processed: an answer from our response
cache (`cached`) is a request at cost 0 with no tokens of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, SQLColumnExpression, case, func, select

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import LedgerRow
from gptmini_graphql.spend.budgets import from_nano

By = Literal["day", "model", "field", "operation", "api_key", "user"]

_GROUPS: dict[str, SQLColumnExpression[object]] = {
    "day": LedgerRow.day,
    "model": LedgerRow.model,
    "field": LedgerRow.field,
    "operation": LedgerRow.operation,
    "api_key": LedgerRow.api_key_id,
    "user": LedgerRow.user_id,
}


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    cached_answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nano_usd: int = 0
    unpriced: int = 0  # calls of models without a price: not in the cost

    @property
    def cost_usd(self) -> float:
        return from_nano(self.cost_nano_usd)


def _uncached(column: SQLColumnExpression[int]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((LedgerRow.cached, 0), else_=column)), 0)


_SUMS = (
    func.count(),
    func.coalesce(func.sum(case((LedgerRow.cached, 1), else_=0)), 0),
    _uncached(LedgerRow.prompt_tokens),
    _uncached(LedgerRow.completion_tokens),
    _uncached(LedgerRow.cached_tokens),
    func.coalesce(func.sum(LedgerRow.cost_nano_usd), 0),
    func.coalesce(func.sum(case((LedgerRow.cost_nano_usd.is_(None), 1), else_=0)), 0),
)


def _where(
    user_id: uuid.UUID | None, start: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    conditions = [LedgerRow.at >= start, LedgerRow.at < end]
    if user_id is not None:
        conditions.append(LedgerRow.user_id == user_id)
    return conditions


async def totals(
    db: Database, user_id: uuid.UUID | None, start: datetime, end: datetime
) -> Totals:
    """`user_id` None: every user's."""
    async with db.session() as session:
        row = (
            await session.execute(select(*_SUMS).where(*_where(user_id, start, end)))
        ).one()
    return Totals(*(int(value) for value in row))


async def breakdown(
    db: Database, by: By, user_id: uuid.UUID | None, start: datetime, end: datetime
) -> list[tuple[str | None, Totals]]:
    """Totals per value of `by`, in order of that value (None: no key, no
    operation name)."""
    group = _GROUPS[by]
    query = (
        select(group, *_SUMS)
        .where(*_where(user_id, start, end))
        .group_by(group)
        .order_by(group)
    )
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return [
        (None if key is None else str(key), Totals(*(int(v) for v in values)))
        for key, *values in rows
    ]
