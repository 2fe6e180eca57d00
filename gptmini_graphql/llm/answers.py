"""What the model answered: text, finish reason, model, and tokens with their cost."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class FinishReason(Enum):
    """Why the model stopped, in the Chat Completions protocol's words (OTHER:
    any it has besides these, such as tool calls)."""

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


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    # What an answer served from our response cache would have cost.
    saved_cost_usd: float | None = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        """Two calls for one answer; an unknown cost stays unknown."""
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cost_usd=_sum(self.cost_usd, other.cost_usd),
            saved_cost_usd=_sum(self.saved_cost_usd, other.saved_cost_usd),
        )

    def served_from_cache(self) -> TokenUsage:
        """The same tokens, paid for once already: cost 0, and what it saved."""
        return TokenUsage(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            cost_usd=0.0,
            saved_cost_usd=self.cost_usd,
        )


def _sum(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first + second


# One generated token: its text, log probability, and the likeliest
# alternatives at that step as (text, log probability) pairs.
TokenLogprob = tuple[str, float, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    finish_reason: FinishReason
    model: str
    usage: TokenUsage
    cached: bool = False
    # Only when asked for, and only if the upstream sent them.
    logprobs: list[TokenLogprob] | None = None

    def to_entry(self) -> dict[str, Any]:
        """What the response cache keeps of it."""
        usage = self.usage
        return {
            "text": self.text,
            "finish_reason": self.finish_reason.value,
            "model": self.model,
            "usage": [
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.cost_usd,
            ],
            "logprobs": self.logprobs,
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any], *, served: bool) -> ChatAnswer:
        """The answer again; `served`: without a call of its own, so free."""
        usage = TokenUsage(*entry["usage"])
        return cls(
            text=entry["text"],
            finish_reason=FinishReason.of(entry["finish_reason"]),
            model=entry["model"],
            usage=usage.served_from_cache() if served else usage,
            cached=served,
            logprobs=_logprobs(entry.get("logprobs")),
        )


def _logprobs(raw: Any) -> list[TokenLogprob] | None:
    """As kept in the cache (JSON turns tuples into lists)."""
    if raw is None:
        return None
    return [(t, lp, [(a, alp) for a, alp in top]) for t, lp, top in raw]


@dataclass(frozen=True, slots=True)
class ChatStreamEnd:
    """The last event of a stream; `usage` is None when the upstream sent none."""

    finish_reason: FinishReason
    model: str
    usage: TokenUsage | None
