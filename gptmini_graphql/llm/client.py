"""The one LLM seam: what tasks ask the model through (as `CallerLLM`,
caller.py), built once at start-up (building.py).

Every task calls `LLM.chat` (or `LLM.stream_chat`). `chat` answers from the
response cache when it may, and meters each call: reserved against the
caller's budgets before, settled with the real usage after (spend/meter.py).
The call itself is calls.py's: bounded as a whole, retries included, by the
configured timeout; retried where worth it; failing fast through a circuit
breaker while an upstream is down; trying the fallback upstream, if one is
set, while the first is unavailable; asking for structured output in the way
each upstream takes it, and validating it; turning the upstream's errors
into ours; and pricing the answer. An answer that lands together with
others while the loop is idle waits for its pass of the loop (pacing.py),
checked and settled after. A stream is read on in streaming.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from gptmini_graphql.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    TokenRateLimited,
)
from gptmini_graphql.llm.answers import ChatAnswer, ChatStreamEnd
from gptmini_graphql.llm.cache import CachePolicy, ResponseCache
from gptmini_graphql.llm.calls import NOT_CONFIGURED, UpstreamCalls
from gptmini_graphql.llm.local.connection import EmbeddedServer
from gptmini_graphql.llm.metering import CALLER_LEFT, error_outcome, unanswered
from gptmini_graphql.llm.pacing import ReplyTurns
from gptmini_graphql.llm.pricing import find_price
from gptmini_graphql.llm.probe import UpstreamProbes
from gptmini_graphql.llm.streaming import upstream_events
from gptmini_graphql.llm.structured import StructuredOutput
from gptmini_graphql.llm.upstream import Upstream
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.settings import ModelPrice, Settings
from gptmini_graphql.tracing import Tracing

if TYPE_CHECKING:
    from gptmini_graphql.spend.meter import Meter


class LLM:
    """Chat Completions over the configured upstreams; none means unconfigured.

    With the embedded model, `embedded` is its server (a process of its own),
    reached like any other upstream: no task can tell it from OpenAI.
    """

    def __init__(
        self,
        upstreams: list[Upstream],
        settings: Settings,
        *,
        embedded: EmbeddedServer | None = None,
        cache: ResponseCache | None = None,
        probes: UpstreamProbes | None = None,
        metrics: Metrics,
        tracing: Tracing,
    ) -> None:
        self.upstreams = upstreams
        self.settings = settings
        self.embedded = embedded
        self.cache = cache
        self.metrics = metrics
        # The one call every answer, streamed or not, is asked with.
        self.calls = UpstreamCalls(upstreams, settings, metrics, tracing)
        # Answers that land together on an idle loop: one per pass (pacing.py).
        self.turns = ReplyTurns()
        # What each remote upstream serves: logged at start, shown by /readyz.
        self.probes = probes or UpstreamProbes([], settings.model_prices)

    @functools.cached_property
    def worst_price(self) -> ModelPrice | None:
        """The dearest of the upstreams' prices (a reservation does not know
        which will answer); None when none of their models has a price."""
        prices = [
            find_price(upstream.model, self.settings.model_prices)
            for upstream in self.upstreams
        ]
        known = [price for price in prices if price is not None]
        if not known:
            return None
        return ModelPrice(
            input=max(p.input for p in known), output=max(p.output for p in known)
        )

    @functools.cached_property
    def cache_identity(self) -> str:
        """Who answers a cached request, as its key says: the first upstream
        (its URL and model), so another server or model is another answer."""
        primary = self.upstreams[0] if self.upstreams else None
        return f"{primary.client.base_url}|{primary.model}" if primary else ""

    @property
    def configured(self) -> bool:
        return bool(self.upstreams)

    @property
    def model(self) -> str:
        return self.upstreams[0].model if self.upstreams else self.settings.openai_model

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.client.aclose()

    async def not_ready(self) -> str | None:
        """Why no answer can be had now (None: ready): unconfigured, or the
        embedded model not loaded or its process down."""
        if not self.upstreams:
            return NOT_CONFIGURED
        if self.embedded is None:
            return None
        return await self.embedded.not_ready()

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        output: StructuredOutput[Any] | None = None,
        top_logprobs: int | None = None,
        stop: list[str] | None = None,
        cache: CachePolicy | None = None,
        meter: Meter | None = None,
    ) -> ChatAnswer:
        """The answer; with `output`, JSON that `output.parse` accepts.

        `top_logprobs`: ask for each token's log probability and that many
        alternatives (`ChatAnswer.logprobs`; None if the upstream sends none).
        """
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if output is not None:
            # The request as written for strict json_schema (and so cached);
            # each upstream gets it in the mode it takes.
            body["response_format"] = output.strict_format
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
        if stop:
            body["stop"] = stop

        asked = False  # whether this request's own call was made (not shared)

        async def ask_upstream() -> ChatAnswer:
            nonlocal asked
            asked = True
            hold = await meter.reserve(body, self.worst_price) if meter else None
            try:
                completion, upstream = await self.calls.call(
                    body, stream=False, output=output
                )
                assert isinstance(completion, dict)  # stream=False: checked JSON
                answer = self.calls.answer(completion, upstream)
            except BaseException as error:
                if meter and hold:
                    await unanswered(meter, hold, self.model, error)
                raise
            outcome = "OK"
            try:
                await self.turns.take()
                if output is not None:
                    output.parse(answer.text)  # a wrong shape is never kept
            except BaseException as error:  # charged its usage all the same
                outcome = error_outcome(error)
                raise
            finally:
                if meter and hold:
                    await meter.settle(
                        hold,
                        model=answer.model,
                        upstream=upstream.name,
                        usage=answer.usage,
                        outcome=outcome,
                    )
            return answer

        # Only a deterministic request has one right answer to keep.
        if self.cache is None or cache is None or cache.mode == "bypass" or temperature:
            return await ask_upstream()
        started = time.perf_counter()
        try:
            entry, served = await self.cache.fetch(
                self.cache.key(cache, self.cache_identity, body),
                cache.mode,
                lambda: _as_entry(ask_upstream()),
            )
        except (BudgetExceeded, BudgetUnavailable, TokenRateLimited):
            if asked:
                raise
            # The shared call was refused by its first caller's budgets, not
            # ours (nor may we see theirs): our own call, against our own.
            return await ask_upstream()
        answer = ChatAnswer.from_entry(entry, served=served)
        if served:
            self.metrics.count_saved(answer.model, answer.usage.saved_cost_usd)
            if meter is not None:
                meter.free(started, answer.model, answer.usage)
        return answer

    async def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        meter: Meter | None = None,
    ) -> AsyncGenerator[str | ChatStreamEnd, None]:
        """Text deltas as the model writes them, then one `ChatStreamEnd`.

        The usage is the upstream's own final chunk, never a count of ours.
        Closing this iterator early closes the upstream response at once, so
        the model stops generating (and billing).
        """
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if meter is None:
            async with aclosing(upstream_events(self.calls, body)) as events:
                async for event in events:
                    if not isinstance(event, tuple):
                        yield event
            return
        hold = await meter.reserve(body, self.worst_price)
        model, usage, outcome = self.model, None, "OK"
        name: str | None = None
        wrote = False
        try:
            async with aclosing(upstream_events(self.calls, body)) as events:
                async for event in events:
                    if isinstance(event, ChatStreamEnd):
                        model, usage = event.model, event.usage
                    elif isinstance(event, tuple):  # which upstream answers
                        model, name = event
                        continue
                    else:
                        wrote = True
                        # Checked here: a coroutine or two for every chunk
                        # cost more than the check.
                        if meter.keep_due(hold):
                            await meter.keep(hold)
                    yield event
        except BaseException as error:
            outcome = error_outcome(error)
            if not wrote and not isinstance(error, CALLER_LEFT):
                await meter.release(hold, model=model, outcome=outcome)
                raise
            # Tokens were generated, or may have been: charged the usage if
            # the upstream sent it, else the reservation (never nothing).
            await meter.settle(
                hold, model=model, upstream=name, usage=usage, outcome=outcome
            )
            raise
        await meter.settle(
            hold, model=model, upstream=name, usage=usage, outcome=outcome
        )


async def _as_entry(answer: Awaitable[ChatAnswer]) -> dict[str, Any]:
    return (await answer).to_entry()
