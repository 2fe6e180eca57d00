"""What the tasks return: the GraphQL result types."""

from __future__ import annotations

from enum import Enum

import strawberry

from gptmini_graphql.llm.client import ChatAnswer
from gptmini_graphql.llm.client import Usage as LLMUsage


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
        "the server's pricing table."
    )

    @classmethod
    def of(cls, usage: LLMUsage) -> Usage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
        )


@strawberry.interface(description="Every answer says which model gave it and its cost.")
class TaskResult:
    model: str = strawberry.field(description="The model that answered.")
    usage: Usage


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


@strawberry.enum
class FinishReason(Enum):
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"

    @classmethod
    def of(cls, reason: str) -> FinishReason:
        try:
            return cls(reason)
        except ValueError:
            return cls.OTHER


@strawberry.type
class Completion(TaskResult):
    text: str
    finish_reason: FinishReason


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
        description="From -1 (most negative) to 1 (most positive)."
    )
    confidence: float = strawberry.field(description="From 0 to 1.")


def answer_fields(answer: ChatAnswer) -> dict[str, object]:
    """The fields every result shares."""
    return {"model": answer.model, "usage": Usage.of(answer.usage)}
