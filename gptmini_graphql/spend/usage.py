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

from gptmini_graphql.db.database import Database
from gptmini_graphql.spend.budgets import Budget, from_nano

By = Literal["day", "model", "field", "operation", "api_key", "user"]

# Each `by`, the ledger's column (only these names go into a statement).
_GROUPS: dict[str, str] = {
    "day": "day",
    "model": "model",
    "field": "field",
    "operation": "operation",
    "api_key": "api_key_id",
    "user": "user_id",
}
_IDS = {"api_key_id", "user_id"}


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


def _uncached(column: str) -> str:
    return f"COALESCE(SUM(CASE WHEN cached THEN 0 ELSE {column} END), 0)"


_SUMS = ", ".join(
    (
        "count(*)",
        "COALESCE(SUM(CASE WHEN cached THEN 1 ELSE 0 END), 0)",
        _uncached("prompt_tokens"),
        _uncached("completion_tokens"),
        _uncached("cached_tokens"),
        "COALESCE(SUM(cost_nano_usd), 0)",
        "COALESCE(SUM(CASE WHEN cost_nano_usd IS NULL THEN 1 ELSE 0 END), 0)",
    )
)


def _where(
    db: Database, user_id: uuid.UUID | None, start: datetime, end: datetime
) -> tuple[str, list[object]]:
    """The WHERE clause and its arguments."""
    values = db.values
    arguments = [values.time(start), values.time(end)]
    where = "WHERE at >= $1 AND at < $2"
    if user_id is not None:
        where += " AND user_id = $3"
        arguments.append(values.uuid(user_id))
    return where, arguments


async def totals(
    db: Database, user_id: uuid.UUID | None, start: datetime, end: datetime
) -> Totals:
    """`user_id` None: every user's."""
    where, arguments = _where(db, user_id, start, end)
    async with db.transaction() as transaction:
        row = await transaction.fetchrow(
            f"SELECT {_SUMS} FROM ledger {where}",  # noqa: S608 - ours alone
            *arguments,
        )
    assert row is not None  # an aggregate has its one row
    return Totals(*(int(value) for value in row))


async def breakdown(
    db: Database, by: By, user_id: uuid.UUID | None, start: datetime, end: datetime
) -> list[tuple[str | None, Totals]]:
    """Totals per value of `by`, in order of that value (None: no key, no
    operation name)."""
    group = _GROUPS[by]
    where, arguments = _where(db, user_id, start, end)
    async with db.transaction() as transaction:
        rows = await transaction.fetch(
            f"SELECT {group}, {_SUMS} FROM ledger {where} "  # noqa: S608 - ours
            f"GROUP BY {group} ORDER BY {group}",
            *arguments,
        )
    to_key = db.values.to_uuid if group in _IDS else (lambda value: value)
    return [
        (None if key is None else str(to_key(key)), Totals(*(int(v) for v in values)))
        for key, *values in rows
    ]


async def spent(db: Database, budget: Budget) -> int:
    """What `budget`'s owner spent in its period by the ledger (answers from
    our cache cost nothing): nano-dollars or tokens, as its unit says."""
    owner = "user_id" if budget.scope == "user" else "api_key_id"
    total = (
        "cost_nano_usd" if budget.unit == "usd" else "prompt_tokens + completion_tokens"
    )
    values = db.values
    async with db.transaction() as transaction:
        value = await transaction.fetchval(
            f"SELECT COALESCE(SUM({total}), 0) FROM ledger "  # noqa: S608 - ours
            f"WHERE {owner} = $1 AND at >= $2 AND at < $3 AND cached = $4",
            values.uuid(budget.owner),
            values.time(budget.start),
            values.time(budget.end),
            False,
        )
    return int(value or 0)
