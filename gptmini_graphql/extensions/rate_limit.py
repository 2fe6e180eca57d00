"""Per-user rate limits: each LLM-backed field of an operation counts once
(OperationInfoExtension has counted them, as `context.model_calls`).

The response then says what is left, in the IETF draft's headers
(draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` lists the
caller's limits (`q` requests per `w` seconds), `RateLimit` what remains of
each (`r`) and seconds until it resets (`t`). What the caller's budgets have
left goes in the result's `extensions.budgets`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLError,
)
from limits import RateLimitItem
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import RateLimited
from gptmini_graphql.rate_limits import OutagePolicy


class RateLimitExtension(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context: RequestContext = execution.context
        cost = context.model_calls
        if cost and context.user is not None:
            services = context.services
            outage = services.settings.rate_limit_redis_outage
            try:
                await services.limiter.hit(
                    context.rate_limits,
                    "user",
                    context.user,
                    cost=cost,
                    outage=outage,
                )
            except RateLimited as refusal:
                await _headers(context, outage)
                if execution.operation_type is OperationType.SUBSCRIPTION:
                    # A subscription starts whatever result is set; raised here,
                    # the error is the stream's one event instead.
                    raise
                # A result set before execution replaces it: nothing runs.
                execution.result = ExecutionResult(
                    data=None,
                    errors=[GraphQLError(refusal.message, original_error=refusal)],
                )
            else:
                await _headers(context, outage)
        yield

    def get_results(self) -> dict[str, Any]:
        left = self.execution_context.context.budget_left.budgets
        return {"budgets": left} if left else {}


async def _headers(context: RequestContext, outage: OutagePolicy) -> None:
    windows = await context.services.limiter.windows(
        context.rate_limits, "user", context.user or "", outage=outage
    )
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
