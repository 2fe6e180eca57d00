"""What each GraphQL operation, and each subscription, was: its JSON log
line, its counts in /metrics and its trace span's name and attributes, all
from one reading of the operation."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import INTERNAL_SERVER_ERROR, AppError
from gptmini_graphql.llm.answers import ChatStreamEnd
from gptmini_graphql.tracing import DetachedSpan

logger = logging.getLogger("gptmini_graphql.graphql")

OK = "OK"
CANCELLED = "CANCELLED"


def log_operation(context: RequestContext, codes: list[str]) -> None:
    """One line per query or mutation: who, what, which model, tokens, cost."""
    results = context.results
    prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    completion_tokens = sum(r.usage.completion_tokens for r in results)
    costs = [r.usage.cost_usd for r in results]
    known = [cost for cost in costs if cost is not None]
    cost_usd = sum(known) if len(known) == len(costs) else None
    model = results[0].model if results else None
    outcome = codes[0] if codes else OK
    services = context.services
    operation = services.metrics.operation_label(context.root_fields)
    services.metrics.count_operation(operation, outcome, context.started)
    if services.tracing.enabled:  # its attributes are not even gathered when off
        services.tracing.describe_current(
            f"graphql {operation}",
            {
                "gptmini.graphql.operation": operation,
                "graphql.operation.name": (context.operation_name or "")[:100] or None,
                "gptmini.graphql.fields": sorted(context.root_fields),
                "gptmini.outcome": outcome,
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": prompt_tokens,
                "gen_ai.usage.output_tokens": completion_tokens,
                "gptmini.cost_usd": cost_usd,
                "gptmini.cached": any(r.cached for r in results) if results else None,
            },
            error=None if outcome == OK else outcome,
        )
    logger.log(
        logging.INFO if outcome == OK else logging.WARNING,
        "graphql operation",
        extra={
            "user": context.user,
            "operation": context.operation_name,
            "fields": list(context.root_fields),
            "inputs": context.inputs,
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": cost_usd,
            "latency_ms": _ms_since(context.started),
            "outcome": outcome,
            "error_codes": codes,
        },
    )


class StreamLog:
    """One line per subscription, written when it ends however it ends.

    A WebSocket context serves every operation of its connection, so what
    belongs to this one stream is kept here rather than on the context.
    """

    def __init__(self, context: RequestContext, field: str) -> None:
        self.context = context
        self.field = field
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.chunks = 0
        self.end: ChatStreamEnd | None = None

    def delta(self) -> None:
        self.chunks += 1
        if self.first_token is None:
            self.first_token = time.perf_counter()

    async def __aenter__(self) -> StreamLog:
        services = self.context.services
        services.metrics.stream_started(self.field)
        self.span: DetachedSpan | None = services.tracing.start_detached(
            f"graphql subscription {self.field}",
            {
                "gptmini.graphql.operation": self.field,
                "gptmini.request_id": self.context.request_id,
                "gptmini.transport": self.context.connection.scope["type"],
            },
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            outcome = OK
        elif isinstance(error, AppError):
            outcome = error.code
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            outcome = CANCELLED  # the client unsubscribed or went away
        else:
            outcome = INTERNAL_SERVER_ERROR
        usage = self.end.usage if self.end else None
        model = self.end.model if self.end else None
        ttft = self.first_token - self.started if self.first_token else None
        self.context.services.metrics.stream_ended(self.field, outcome, ttft)
        if self.span is not None:
            self.span.end(
                {
                    "gptmini.outcome": outcome,
                    "gptmini.time_to_first_token_ms": round(ttft * 1000, 2)
                    if ttft is not None
                    else None,
                    "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else None,
                    "gen_ai.usage.output_tokens": usage.completion_tokens
                    if usage
                    else None,
                    "gptmini.cost_usd": usage.cost_usd if usage else None,
                },
                error=None if outcome in (OK, CANCELLED) else outcome,
            )
        logger.log(
            logging.INFO if outcome in (OK, CANCELLED) else logging.WARNING,
            "graphql subscription",
            extra={
                "user": self.context.user,
                "field": self.field,
                "model": model,
                "time_to_first_token_ms": _ms_since(self.started, self.first_token)
                if self.first_token
                else None,
                "latency_ms": _ms_since(self.started),
                # Chunks are what we know of a stream cut short: its usage
                # comes only with the upstream's last chunk.
                "chunks": self.chunks,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "cost_usd": usage.cost_usd if usage else None,
                "usage_missing": self.end is not None and usage is None,
                "outcome": outcome,
            },
        )


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((end or time.perf_counter()) - start) * 1000, 2)
