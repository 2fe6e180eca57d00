"""The JSON log line of each GraphQL operation, and of each subscription."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType

from gptmini_graphql import metrics, tracing
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import INTERNAL_SERVER_ERROR, AppError
from gptmini_graphql.llm.answers import ChatStreamEnd

logger = logging.getLogger("gptmini_graphql.graphql")

OK = "OK"
CANCELLED = "CANCELLED"


def log_operation(context: RequestContext, codes: list[str]) -> None:
    """One line per query or mutation: who, what, which model, tokens, cost."""
    results = context.results
    costs = [r.usage.cost_usd for r in results]
    outcome = codes[0] if codes else OK
    metrics.count_operation(context.root_fields, outcome, context.started)
    tracing.annotate_operation(context, outcome)
    logger.log(
        logging.INFO if outcome == OK else logging.WARNING,
        "graphql operation",
        extra={
            "user": context.user,
            "operation": context.operation_name,
            "fields": list(context.root_fields),
            "inputs": context.inputs,
            "model": results[0].model if results else None,
            "prompt_tokens": sum(r.usage.prompt_tokens for r in results),
            "completion_tokens": sum(r.usage.completion_tokens for r in results),
            "cost_usd": None if None in costs else sum(costs),
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
        metrics.stream_started(self.field)
        self.span = tracing.start_subscription(self.context, self.field)
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
        ttft = self.first_token - self.started if self.first_token else None
        metrics.stream_ended(self.field, outcome, ttft)
        if self.span is not None:
            self.span.end(outcome, self.end, ttft)
        logger.log(
            logging.INFO if outcome in (OK, CANCELLED) else logging.WARNING,
            "graphql subscription",
            extra={
                "user": self.context.user,
                "field": self.field,
                "model": self.end.model if self.end else None,
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
