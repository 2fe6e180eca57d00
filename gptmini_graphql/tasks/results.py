"""What the tasks return: the GraphQL result types."""

from __future__ import annotations

from enum import Enum
from typing import TypedDict

import strawberry

from gptmini_graphql.llm.answers import (
    ChatAnswer,
    ChatStreamEnd,
    FinishReason,
    TokenUsage,
)


@strawberry.type(description="Tokens used by one answer and what they cost.")
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = strawberry.field(
        description="Prompt tokens the provider served from its prompt cache."
    )
    total_tokens: int
    cost_usd: float | None = strawberry.field(
        description="Cost in US dollars; null when the model has no price in "
        "the server's pricing table. 0 for an answer from the response cache."
    )
    saved_cost_usd: float | None = strawberry.field(
        description="What an answer from the response cache would have cost "
        "(0 for a fresh answer; null when the model has no price)."
    )

    @classmethod
    def of(cls, usage: TokenUsage) -> Usage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
            saved_cost_usd=usage.saved_cost_usd,
        )


@strawberry.interface(description="Every answer says which model gave it and its cost.")
class TaskResult:
    model: str = strawberry.field(description="The model that answered.")
    usage: Usage
    cached: bool = strawberry.field(
        description="Served from the response cache (or shared with an identical "
        "request in flight) rather than asked of the model."
    )


@strawberry.type
class Summary(TaskResult):
    text: str


@strawberry.type
class Translation(TaskResult):
    text: str
    source_language: str = strawberry.field(
        description="ISO 639-1 code of the source text (detected when not given)."
    )
    target_language: str = strawberry.field(description="ISO 639-1 code.")


# The LLM seam's own, shown as it is.
strawberry.enum(FinishReason)


@strawberry.type
class Completion(TaskResult):
    text: str
    finish_reason: FinishReason


@strawberry.type(
    description="One event of a streamed completion: text deltas as the model "
    "writes them, then a last event with `done: true`, the finish reason, the "
    "model and the usage."
)
class CompletionChunk:
    text: str = strawberry.field(description="Text since the previous event.")
    done: bool
    finish_reason: FinishReason | None = None
    model: str | None = None
    usage: Usage | None = strawberry.field(
        default=None,
        description="On the last event; null there only when the model server "
        "did not report usage (then `notice` says so).",
    )
    notice: str | None = None

    @classmethod
    def last(cls, end: ChatStreamEnd) -> CompletionChunk:
        return cls(
            text="",
            done=True,
            finish_reason=end.finish_reason,
            model=end.model,
            usage=Usage.of(end.usage) if end.usage else None,
            notice=None if end.usage else USAGE_MISSING,
        )


USAGE_MISSING = "The model server did not report token usage; the cost is unknown."


@strawberry.enum
class Sentiment(Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"
    MIXED = "mixed"


@strawberry.type
class SentimentAnalysis(TaskResult):
    sentiment: Sentiment
    score: float = strawberry.field(
        description="From -1 (most negative) to 1 (most positive): the "
        "probability the model gave positive minus that of negative. Without "
        "token probabilities from the model server: 0.5, -0.5 or 0 by the label."
    )
    confidence: float | None = strawberry.field(
        description="From 0 to 1: the probability the model gave its label; "
        "null when the model server reports no token probabilities."
    )


class AnswerFields(TypedDict):
    """TaskResult's fields, as keyword arguments to any of its types."""

    model: str
    usage: Usage
    cached: bool


def answer_fields(answer: ChatAnswer) -> AnswerFields:
    """The fields every result shares."""
    return {
        "model": answer.model,
        "usage": Usage.of(answer.usage),
        "cached": answer.cached,
    }
