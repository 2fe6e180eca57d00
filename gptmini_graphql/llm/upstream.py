"""One OpenAI-compatible endpoint: its client and model, the retries of a
request to it, and what its errors mean to our callers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from gptmini_graphql.circuit_breaker import CircuitBreaker
from gptmini_graphql.errors import (
    AppError,
    BadUserInput,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.malformed import MalformedAnswer, checked
from gptmini_graphql.llm.resilience import (
    is_retryable,
    retry_after_seconds,
    retry_delay,
)

logger = logging.getLogger("gptmini_graphql.llm")

# `client.post` rather than `client.chat.completions.create`: the same request
# and errors, without the SDK walking every parameter against its type
# definitions (a tenth of our CPU per request; our bodies are plain).
CHAT_COMPLETIONS = "/chat/completions"


class Upstream:
    """One OpenAI-compatible endpoint: its client, model, retries and breaker."""

    def __init__(
        self,
        name: str,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        retries: int,
        breaker: CircuitBreaker,
        describe_error: Callable[[openai.APIError], AppError] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.model = model
        self.retries = retries
        self.breaker = breaker
        # What an SDK error means to our callers, in this upstream's words.
        self.describe_error = describe_error or upstream_error
        self.url = client.base_url.join(CHAT_COMPLETIONS.lstrip("/"))

    async def post(self, body: dict[str, Any], *, deadline: float, stream: bool) -> Any:
        """The request, retried with backoff while the deadline leaves room."""
        loop = asyncio.get_running_loop()
        body = {**body, "model": self.model}
        for attempt in range(self.retries + 1):
            try:
                if stream:
                    return await self.client.post(
                        CHAT_COMPLETIONS,
                        body=body,
                        cast_to=object,
                        stream=True,
                        stream_cls=openai.AsyncStream[object],
                    )
                return await self._completion(body)
            except openai.APIError as exc:
                if attempt == self.retries or not is_retryable(exc):
                    raise
                delay = retry_delay(exc, attempt)
                if loop.time() + delay >= deadline:
                    raise  # the wait alone would outlast the request
                logger.info(
                    "retrying upstream",
                    extra={
                        "upstream": self.name,
                        "attempt": attempt + 1,
                        "delay_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _completion(self, body: dict[str, Any]) -> ChatCompletion:
        """One answer, checked: a malformed one raises MalformedAnswer."""
        try:
            completion = await self.client.post(
                CHAT_COMPLETIONS, body=body, cast_to=ChatCompletion
            )
        except ValueError as exc:  # a body labelled JSON that is not JSON
            raise MalformedAnswer(
                "The model server sent a malformed answer.", self.url, transient=True
            ) from exc
        return checked(completion, self.url)


def upstream_error(exc: openai.APIError) -> AppError:
    """Map one SDK error to the error the caller sees; details go to the log."""
    status = getattr(exc, "status_code", None)
    logger.warning(
        "upstream error",
        extra={"error": type(exc).__name__, "status": status, "code": exc.code},
    )
    if isinstance(exc, MalformedAnswer):
        return UpstreamError(exc.message)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable("The model server could not be reached.")
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return UpstreamUnavailable("The model provider's quota is exhausted.")
        return UpstreamRateLimited(
            "The model provider is rate limiting this server; retry later.",
            retry_after=retry_after_seconds(exc.response.headers),
        )
    if isinstance(exc, openai.InternalServerError):
        return UpstreamUnavailable("The model server failed to answer.")
    if (
        isinstance(exc, openai.BadRequestError)
        and exc.code == "context_length_exceeded"
    ):
        # The provider's own words name the limit, and hold nothing secret.
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        return BadUserInput(
            "The text is too long for the model's context window"
            + (f": {detail}" if isinstance(detail, str) else ".")
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamError("The model provider rejected this server's credentials.")
    return UpstreamError("The model server refused the request.")
