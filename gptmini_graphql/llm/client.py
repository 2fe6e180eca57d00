"""The one LLM seam: a shared `AsyncOpenAI` client and the Chat Completions call.

Every task calls `LLM.chat`. It bounds the whole call (retries included) by
the configured timeout, turns the SDK's errors into ours, and prices the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gptmini_graphql.errors import (
    BadUserInput,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.inprocess import InProcessTransport
from gptmini_graphql.llm.pricing import cost_usd, find_price
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")

NOT_CONFIGURED = (
    "No LLM upstream is configured: set OPENAI_API_KEY (for OpenAI) or "
    "OPENAI_BASE_URL (for any OpenAI-compatible server), or LLM_BACKEND=local "
    "for the embedded model, and restart."
)
# `client.post` rather than `client.chat.completions.create`: the same request,
# retries and errors, without the SDK walking every parameter against its
# type definitions (a tenth of our CPU per request; our bodies are plain).
CHAT_COMPLETIONS = "/chat/completions"
# The embedded model's address; only the in-process transport ever sees it.
EMBEDDED_URL = "http://embedded.local"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """Two calls for one answer; an unknown cost stays unknown."""
        costs = (self.cost_usd, other.cost_usd)
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cost_usd=None if None in costs else sum(costs),
        )


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    finish_reason: str
    model: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChatStreamEnd:
    """The last event of a stream; `usage` is None when the upstream sent none."""

    finish_reason: str
    model: str
    usage: Usage | None


class LLM:
    """Chat Completions over one shared client; `client=None` means unconfigured.

    With the embedded model, `embedded` is the in-process transport the client
    reaches it through: no task can tell it from any other upstream.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI | None,
        settings: Settings,
        *,
        model: str,
        embedded: InProcessTransport | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.model = model
        self.embedded = embedded

    async def start(self) -> None:
        if self.embedded is not None:
            await self.embedded.start()  # loads the model in the background

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.embedded is not None:
            await self.embedded.aclose()

    async def ready(self) -> bool:
        """Configured, and for the embedded model, loaded."""
        if self.client is None:
            return False
        if self.embedded is None:
            return True
        probe = httpx2.Request("GET", f"{EMBEDDED_URL}/readyz")
        response = await self.embedded.handle_async_request(probe)
        await response.aclose()
        return response.status_code == 200

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
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if response_format:
            body["response_format"] = response_format
        try:
            # The SDK's timeout is per attempt; this deadline covers its retries too.
            async with asyncio.timeout(self.settings.llm_timeout_seconds):
                completion = await self.client.post(
                    CHAT_COMPLETIONS, body=body, cast_to=ChatCompletion
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
        model = completion.model or self.model
        return ChatAnswer(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            model=model,
            usage=self._usage(model, completion.usage),
        )

    async def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
    ) -> AsyncIterator[str | ChatStreamEnd]:
        """Text deltas as the model writes them, then one `ChatStreamEnd`.

        The usage is the upstream's own final chunk, never a count of ours.
        Closing this iterator early closes the upstream response at once, so
        the model stops generating (and billing).
        """
        if self.client is None:
            raise UpstreamUnavailable(NOT_CONFIGURED)
        # No overall deadline for a stream: each wait for the next chunk is bounded.
        deadline = self.settings.llm_timeout_seconds
        model, finish_reason, usage = self.model, None, None
        try:
            async with asyncio.timeout(deadline):
                stream = await self.client.post(
                    CHAT_COMPLETIONS,
                    body={
                        "model": self.model,
                        "messages": messages,
                        "max_tokens": max_tokens,
                        "temperature": temperature,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    },
                    cast_to=ChatCompletionChunk,
                    stream=True,
                    stream_cls=openai.AsyncStream[ChatCompletionChunk],
                )
            async with stream:
                chunks = aiter(stream)
                while True:
                    try:
                        async with asyncio.timeout(deadline):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    model = chunk.model or model
                    usage = chunk.usage or usage
                    if chunk.choices:
                        choice = chunk.choices[0]
                        finish_reason = choice.finish_reason or finish_reason
                        if choice.delta.content:
                            yield choice.delta.content
        except (TimeoutError, openai.APITimeoutError) as exc:
            raise UpstreamTimeout(
                f"The model stopped answering for {deadline:g} seconds."
            ) from exc
        except openai.APIError as exc:
            raise upstream_error(exc) from exc
        if finish_reason is None:
            raise UpstreamUnavailable("The model's stream ended before its answer did.")
        yield ChatStreamEnd(
            finish_reason=finish_reason,
            model=model,
            usage=self._usage(model, usage) if usage is not None else None,
        )

    def _usage(self, model: str, usage: CompletionUsage) -> Usage:
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        return Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=cached,
            cost_usd=cost_usd(
                find_price(model, self.settings.model_prices),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=cached,
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
        # The provider's own words name the limit, and hold nothing secret.
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        return BadUserInput(
            "The text is too long for the model's context window"
            + (f": {detail}" if isinstance(detail, str) else ".")
        )
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


def build_llm(
    settings: Settings,
    http_client: httpx2.AsyncClient | None = None,
    *,
    warm_up_schemas: Iterable[Mapping[str, Any]] = (),
) -> LLM:
    """The shared client, built once at start-up from settings.

    `warm_up_schemas`: response formats the embedded model prepares at start-up.
    """
    if settings.backend == "local":
        # Imported here: llama.cpp loads only for the embedded backend.
        from gptmini_graphql.llm.embedded_server import create_embedded_app

        embedded = InProcessTransport(
            create_embedded_app(settings, warm_up_schemas=warm_up_schemas)
        )
        client = openai.AsyncOpenAI(
            api_key="embedded",
            base_url=f"{EMBEDDED_URL}/v1",
            timeout=settings.llm_timeout_seconds,
            # A full queue answers 429 at once; retrying would only wait in line.
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=embedded),
        )
        return LLM(client, settings, model=settings.local_model_name, embedded=embedded)
    if not settings.upstream_configured:
        return LLM(None, settings, model=settings.openai_model)
    api_key = settings.openai_api_key
    client = openai.AsyncOpenAI(
        # Self-hosted OpenAI-compatible servers often need no key at all.
        api_key=api_key.get_secret_value() if api_key else "not-needed",
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        http_client=http_client,
    )
    return LLM(client, settings, model=settings.openai_model)
