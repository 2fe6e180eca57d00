"""Per-user rate limits: each LLM-backed field of an operation counts once
(OperationInfoExtension has counted them, as `context.model_calls`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from graphql import (
    ExecutionResult,
    GraphQLError,
)
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import RateLimited


class RateLimitExtension(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context: RequestContext = execution.context
        cost = context.model_calls
        if cost and context.user is not None:
            services = context.services
            try:
                await services.limiter.hit(
                    context.rate_limits,
                    "user",
                    context.user,
                    cost=cost,
                    outage=services.settings.rate_limit_redis_outage,
                )
            except RateLimited as refusal:
                if execution.operation_type is OperationType.SUBSCRIPTION:
                    # A subscription starts whatever result is set; raised here,
                    # the error is the stream's one event instead.
                    raise
                # A result set before execution replaces it: nothing runs.
                execution.result = ExecutionResult(
                    data=None,
                    errors=[GraphQLError(refusal.message, original_error=refusal)],
                )
        yield
