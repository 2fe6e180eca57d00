"""Per-user rate limits: each LLM-backed field of an operation counts once
(operation_info.py has counted them, as `context.model_calls`).

The response then says what is left, in the IETF draft's headers
(draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` lists the
caller's limits (`q` requests per `w` seconds), `RateLimit` what remains of
each (`r`) and seconds until it resets (`t`). What the caller's budgets have
left goes in the result's `extensions.budgets`.
"""

from __future__ import annotations

import math
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLError,
)
from limits import RateLimitItem
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.rate_limit_redis import Window


async def charge(execution: ExecutionContext) -> None:
    """Counts the operation's model calls against the caller's limits before
    it runs; past a limit, its result is the refusal and nothing runs."""
    context: RequestContext = execution.context
    cost = context.model_calls
    if not cost or context.user is None:
        return
    services = context.services
    charged = await services.limiter.charge(
        context.rate_limits,
        "user",
        context.user,
        cost=cost,
        outage=services.settings.rate_limit_redis_outage,
    )
    _headers(context, charged.windows)
    if (refusal := charged.refusal) is None:
        return
    if execution.operation_type is OperationType.SUBSCRIPTION:
        # A subscription starts whatever result is set; raised here,
        # the error is the stream's one event instead.
        raise refusal
    # A result set before execution replaces it: nothing runs.
    execution.result = ExecutionResult(
        data=None,
        errors=[GraphQLError(refusal.message, original_error=refusal)],
    )


def budgets_left(context: RequestContext) -> dict[str, Any]:
    """The result's `extensions`: what the caller's budgets have left."""
    left = context.budget_left.budgets
    return {"budgets": left} if left else {}


def _headers(context: RequestContext, windows: list[Window]) -> None:
    if not windows:
        return
    context.response_headers["RateLimit-Policy"] = ", ".join(
        f'"{_name(item)}";q={item.amount};w={item.get_expiry()}'
        for item, _, _ in windows
    )
    context.response_headers["RateLimit"] = ", ".join(
        f'"{_name(item)}";r={left};t={math.ceil(reset)}'
        for item, left, reset in windows
    )


def _name(item: RateLimitItem) -> str:
    multiple = f"{item.multiples}-" if item.multiples > 1 else ""
    return f"{item.amount}-per-{multiple}{item.GRANULARITY.name}"
