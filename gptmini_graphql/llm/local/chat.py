"""What a chat completion is to the embedded model: the request it takes,
the completion it gives, and the errors it raises on purpose (the server
maps each to an OpenAI-shaped status and body).

Why it stopped, each token's log probabilities and the token counts are the
LLM seam's own types (llm/answers.py): the same things the API reads back
from the server's answer. On the wire they are OpenAI's JSON (replies.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gptmini_graphql.llm.answers import FinishReason, TokenLogprob, TokenUsage


class LocalModelError(Exception):
    """Base of the errors the embedded model raises on purpose."""


class QueueFullError(LocalModelError):
    """Every slot is taken: one request is generating and the queue is full."""

    def __init__(self, in_flight: int, retry_after: int) -> None:
        super().__init__(
            f"The local model is busy ({in_flight} generating or waiting for "
            f"it). Retry in about {retry_after} s."
        )
        self.retry_after = retry_after


class ModelUnavailableError(LocalModelError):
    """The model is shutting down (the server answers 503)."""


class InvalidRequestError(LocalModelError):
    """The request cannot be served as given (the server answers 400)."""

    code: str | None = None
    param: str | None = None


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"
    param = "messages"

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"This model's maximum context length limit is {limit} tokens, "
            f"but the messages came to {prompt_tokens} tokens. Shorten the "
            "messages and leave room for the answer."
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat completion, already validated by the caller."""

    messages: Sequence[Mapping[str, str]]
    max_tokens: int | None = None  # None: as many as the context leaves room for
    temperature: float = 1.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: Sequence[str] = ()
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None  # constrain the answer to it
    json_object: bool = False  # constrain the answer to some JSON value
    # Per generated token: its log probability and the `top_logprobs` likeliest
    # tokens at that step, before the JSON grammar narrows the choice.
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason  # STOP or LENGTH: the engine has no other
    usage: TokenUsage
    logprobs: tuple[TokenLogprob, ...] | None = None
