"""One call to the model: the first upstream that answers, in order, within
one deadline (retries included), and its answer read and priced.

The LLM facade (client.py) makes every call through `UpstreamCalls.call`;
a streamed answer is read on in streaming.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gptmini_graphql.errors import (
    AppError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.answers import (
    ChatAnswer,
    FinishReason,
    TokenLogprob,
    TokenUsage,
)
from gptmini_graphql.llm.malformed import Completion, token_counts
from gptmini_graphql.llm.pricing import cost_usd, find_price
from gptmini_graphql.llm.resilience import is_outage
from gptmini_graphql.llm.structured import StructuredOutput
from gptmini_graphql.llm.upstream import Kind, Reply, Upstream
from gptmini_graphql.llm.upstream_errors import APIError, APITimeoutError
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.settings import Settings
from gptmini_graphql.tracing import Tracing

NOT_CONFIGURED = (
    "No LLM upstream is configured: set OPENAI_API_KEY (for OpenAI) or "
    "OPENAI_BASE_URL (for any OpenAI-compatible server), or LLM_BACKEND=local "
    "for the embedded model, and restart."
)


@dataclass(frozen=True, slots=True)
class UpstreamCalls:
    """The configured upstreams, called in order: fails fast through each
    one's circuit breaker, falls back while one is unavailable, turns the
    upstream's errors into ours, and prices every answer (counted once here)."""

    upstreams: list[Upstream]
    settings: Settings
    metrics: Metrics
    tracing: Tracing

    async def call(
        self,
        body: dict[str, Any],
        *,
        stream: bool,
        output: StructuredOutput[Any] | None = None,
    ) -> tuple[Reply, Upstream]:
        """The first upstream that answers, in order, within one deadline.

        The next upstream is tried only while the one before is unavailable
        (down, failing, out of quota, its circuit open); a refusal of the
        request itself (4xx, or a 500 that blames the request) is the answer,
        and says nothing of the upstream's health.
        """
        kind: Kind = "stream" if stream else "structured" if output else "text"
        if not self.upstreams:
            raise UpstreamUnavailable(NOT_CONFIGURED)
        timeout = self.settings.llm_timeout_seconds
        deadline = asyncio.get_running_loop().time() + timeout
        failure: AppError | None = None
        for upstream in self.upstreams:
            breaker = upstream.breakers[kind]
            if not breaker.allow():
                failure = UpstreamUnavailable(
                    "The model server is failing; requests to it are paused.",
                    retry_after=breaker.retry_after(),
                )
                continue
            try:
                with (
                    self.metrics.upstream_call(upstream.name, upstream.model, stream),
                    self.tracing.upstream_span(upstream.name, upstream.model, body),
                ):
                    async with asyncio.timeout_at(deadline):
                        answer = await upstream.ask(
                            body, output, deadline=deadline, stream=stream
                        )
            except (TimeoutError, APITimeoutError) as exc:
                breaker.failed()
                failure = UpstreamTimeout(
                    f"The model did not answer within {timeout:g} seconds."
                )
                failure.__cause__ = exc
                break  # the deadline is spent: no time left for a fallback
            except APIError as exc:
                failure = upstream.describe_error(exc)
                failure.__cause__ = exc
                if is_outage(exc):
                    upstream.failed(kind, exc)
                else:
                    breaker.released()
                if not isinstance(failure, UpstreamUnavailable):
                    break
            except BaseException:
                breaker.released()  # cancelled: says nothing of the upstream
                raise
            else:
                if not stream:  # a stream's success is known at its end
                    breaker.succeeded()
                return answer, upstream
        assert failure is not None
        raise failure

    def answer(self, completion: Completion, upstream: Upstream) -> ChatAnswer:
        """`call`'s completion (checked: malformed.py) as our answer, its
        usage priced."""
        choice = completion["choices"][0]
        model = completion.get("model")
        model = model if isinstance(model, str) and model else upstream.model
        return ChatAnswer(
            text=choice["message"]["content"],
            # OpenAI-compatible servers may send null.
            finish_reason=FinishReason.of(choice.get("finish_reason") or "stop"),
            model=model,
            usage=self.priced(model, completion["usage"]),
            logprobs=_token_logprobs(choice),
        )

    def priced(self, model: str, usage: object) -> TokenUsage:
        """An answer's `usage` object, priced (UpstreamError if it is no usage)."""
        counts = token_counts(usage)
        if counts is None:
            raise UpstreamError("The model returned an answer without usage.")
        prompt, completion, cached = counts
        priced = TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cost_usd=cost_usd(
                find_price(model, self.settings.model_prices),
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
            ),
        )
        self.metrics.count_usage(model, priced)  # each upstream answer passes here once
        return priced


def _token_logprobs(choice: dict[str, Any]) -> list[TokenLogprob] | None:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    try:
        return [
            (
                e["token"],
                e["logprob"],
                [(a["token"], a["logprob"]) for a in e.get("top_logprobs") or []],
            )
            for e in content
        ]
    except (KeyError, TypeError, AttributeError):
        return None  # not what the protocol says: as if none were sent
