"""The one LLM seam: a shared `AsyncOpenAI` client and the Chat Completions call.

Every task calls `LLM.chat`. It bounds the whole call (retries included) by
the configured timeout, turns the SDK's errors into ours, and prices the answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

from gptmini_graphql.errors import (
    BadUserInput,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.pricing import cost_usd, find_price
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")

NOT_CONFIGURED = (
    "No LLM backend is configured: set OPENAI_API_KEY (for OpenAI) or "
    "OPENAI_BASE_URL (for any OpenAI-compatible server) and restart."
)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    finish_reason: str
    model: str
    usage: Usage


class LLM:
    """Chat Completions over one shared client; `client=None` means unconfigured."""

    def __init__(self, client: openai.AsyncOpenAI | None, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @property
    def ready(self) -> bool:
        return self.client is not None

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        response_format: dict[str, Any] | None = None,
    ) -> ChatAnswer:
        if self.client is None:
            raise UpstreamUnavailable(NOT_CONFIGURED)
        extra = {"response_format": response_format} if response_format else {}
        try:
            # The SDK's timeout is per attempt; this deadline covers its retries too.
            async with asyncio.timeout(self.settings.llm_timeout_seconds):
                completion = await self.client.chat.completions.create(
                    model=self.settings.openai_model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    **extra,
                )
        except (TimeoutError, openai.APITimeoutError) as exc:
            raise UpstreamTimeout(
                f"The model did not answer within "
                f"{self.settings.llm_timeout_seconds:g} seconds."
            ) from exc
        except openai.APIError as exc:
            raise upstream_error(exc) from exc
        return self._answer(completion)

    def _answer(self, completion: ChatCompletion) -> ChatAnswer:
        if not completion.choices or completion.usage is None:
            raise UpstreamError(
                "The model returned an answer without choices or usage."
            )
        choice = completion.choices[0]
        usage = completion.usage
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        model = completion.model or self.settings.openai_model
        return ChatAnswer(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            model=model,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=cached,
                cost_usd=cost_usd(
                    find_price(model, self.settings.model_prices),
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cached_tokens=cached,
                ),
            ),
        )


def upstream_error(exc: openai.APIError) -> Exception:
    """Map one SDK error to the error the caller sees; details go to the log."""
    status = getattr(exc, "status_code", None)
    logger.warning(
        "upstream error",
        extra={"error": type(exc).__name__, "status": status, "code": exc.code},
    )
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
        return BadUserInput("The text is too long for the model's context window.")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamError("The model provider rejected this server's credentials.")
    return UpstreamError("The model server refused the request.")


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((moment - datetime.now(UTC)).total_seconds(), 0)


def build_llm(settings: Settings, http_client: httpx2.AsyncClient | None = None) -> LLM:
    """The shared client, built once at start-up from settings."""
    if not settings.upstream_configured:
        return LLM(None, settings)
    api_key = settings.openai_api_key
    client = openai.AsyncOpenAI(
        # Self-hosted OpenAI-compatible servers often need no key at all.
        api_key=api_key.get_secret_value() if api_key else "not-needed",
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        http_client=http_client,
    )
    return LLM(client, settings)
