"""The one LLM seam: shared `AsyncOpenAI` clients and the Chat Completions call.

Every task calls `LLM.chat` (or `LLM.stream_chat`). It bounds the whole call,
retries included, by the configured timeout; retries what is worth retrying;
fails fast through a circuit breaker while an upstream is down; tries the
fallback upstream, if one is set, while the first is unavailable; asks for
structured output in the way each upstream takes it, and validates it; turns
the SDK's errors into ours; and prices the answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

import httpx2
import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from gptmini_graphql.circuit_breaker import CircuitBreaker, NeverOpen
from gptmini_graphql.errors import (
    AppError,
    BudgetExceeded,
    BudgetUnavailable,
    TokenRateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.answers import (
    ChatAnswer,
    ChatStreamEnd,
    FinishReason,
    TokenLogprob,
    TokenUsage,
)
from gptmini_graphql.llm.cache import CachePolicy, ResponseCache
from gptmini_graphql.llm.local.connection import EmbeddedServer, embedded_error
from gptmini_graphql.llm.malformed import MalformedAnswer
from gptmini_graphql.llm.pricing import cost_usd, find_price
from gptmini_graphql.llm.probe import ModelsProbe, UpstreamProbes
from gptmini_graphql.llm.resilience import is_outage
from gptmini_graphql.llm.structured import FormatNegotiation, StructuredOutput
from gptmini_graphql.llm.upstream import Kind, Reply, Upstream
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.settings import ModelPrice, Settings
from gptmini_graphql.shared_redis import SharedRedis
from gptmini_graphql.tracing import Tracing

if TYPE_CHECKING:
    from gptmini_graphql.spend.meter import Hold, Meter

logger = logging.getLogger("gptmini_graphql.llm")

NOT_CONFIGURED = (
    "No LLM upstream is configured: set OPENAI_API_KEY (for OpenAI) or "
    "OPENAI_BASE_URL (for any OpenAI-compatible server), or LLM_BACKEND=local "
    "for the embedded model, and restart."
)


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
        self.tracing = tracing
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

    @property
    def configured(self) -> bool:
        return bool(self.upstreams)

    @property
    def model(self) -> str:
        return self.upstreams[0].model if self.upstreams else self.settings.openai_model

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.client.close()

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
                completion, upstream = await self._call(
                    body, stream=False, output=output
                )
                assert isinstance(completion, ChatCompletion)  # stream=False
                answer = self._answer(completion, upstream)
            except BaseException as error:
                if meter and hold:
                    await _unanswered(meter, hold, self.model, error)
                raise
            outcome = "OK"
            try:
                if output is not None:
                    output.parse(answer.text)  # a wrong shape is never kept
            except AppError as error:
                outcome = error.code
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
        primary = self.upstreams[0] if self.upstreams else None
        identity = f"{primary.client.base_url}|{primary.model}" if primary else ""
        try:
            entry, served = await self.cache.fetch(
                self.cache.key(cache, identity, body),
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
            async with aclosing(self._stream(body)) as events:
                async for event in events:
                    if not isinstance(event, tuple):
                        yield event
            return
        hold = await meter.reserve(body, self.worst_price)
        model, usage, outcome = self.model, None, "OK"
        name: str | None = None
        wrote = False
        try:
            async with aclosing(self._stream(body)) as events:
                async for event in events:
                    if isinstance(event, ChatStreamEnd):
                        model, usage = event.model, event.usage
                    elif isinstance(event, tuple):  # which upstream answers
                        model, name = event
                        continue
                    else:
                        wrote = True
                        await meter.keep(hold)
                    yield event
        except BaseException as error:
            outcome = _outcome(error)
            if not wrote and not isinstance(error, _CALLER_LEFT):
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

    async def _stream(
        self, body: dict[str, Any]
    ) -> AsyncGenerator[str | ChatStreamEnd | tuple[str, str], None]:
        """stream_chat's events, first of all (model, upstream name)."""
        stream, upstream = await self._call(body, stream=True)
        assert isinstance(stream, openai.AsyncStream)  # stream=True
        yield upstream.model, upstream.name
        # The stream's circuit hears how the stream ended, not that it began:
        # most streams that break do so after their HTTP 200.
        breaker = upstream.breakers["stream"]
        # No overall deadline for a stream: each wait for the next chunk is bounded.
        wait = self.settings.llm_timeout_seconds
        model, finish_reason, usage = upstream.model, None, None
        wrote = False
        reading = self.metrics.streaming(upstream.name)
        try:
            async with stream:
                chunks = aiter(stream)
                while True:
                    try:
                        async with asyncio.timeout(wait):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except ValueError as exc:  # an event that is not JSON
                        raise UpstreamError(MALFORMED_CHUNK) from exc
                    # Raw dicts: building the SDK's typed chunk for every token
                    # was a quarter of a stream's CPU.
                    if not isinstance(chunk, dict):
                        raise UpstreamError(MALFORMED_CHUNK)
                    try:
                        model = chunk.get("model") or model
                        usage = chunk.get("usage") or usage
                        choice = (chunk.get("choices") or [{}])[0]
                        finish_reason = choice.get("finish_reason") or finish_reason
                        text = (choice.get("delta") or {}).get("content")
                    except (AttributeError, IndexError, TypeError) as exc:
                        raise UpstreamError(MALFORMED_CHUNK) from exc
                    if text:
                        wrote = True
                        yield text
        except (TimeoutError, openai.APITimeoutError) as exc:
            breaker.failed()
            raise UpstreamTimeout(
                f"The model stopped answering for {wait:g} seconds."
            ) from exc
        except openai.APIError as exc:
            # A dropped connection, or an error event: an outage of this
            # stream (the server answered it, so only streams are paused).
            if is_outage(exc):
                breaker.failed()
            else:
                breaker.released()  # an error event that blames the request
            raise upstream.describe_error(exc) from exc
        except UpstreamError:
            breaker.failed()  # a malformed stream: its fault
            raise
        except BaseException:
            breaker.released()  # the caller left: says nothing of the upstream
            raise
        finally:
            reading.dec()
        try:
            if finish_reason is None:
                raise UpstreamUnavailable(
                    "The model's stream ended before its answer did."
                )
            if not wrote:
                raise UpstreamError(EMPTY_ANSWER)
            end = ChatStreamEnd(
                finish_reason=FinishReason.of(finish_reason),
                model=model,
                usage=self._usage(model, _stream_usage(usage))
                if usage is not None
                else None,
            )
        except UpstreamError:
            breaker.failed()
            raise
        breaker.succeeded()
        yield end

    async def _call(
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
            except (TimeoutError, openai.APITimeoutError) as exc:
                breaker.failed()
                failure = UpstreamTimeout(
                    f"The model did not answer within {timeout:g} seconds."
                )
                failure.__cause__ = exc
                break  # the deadline is spent: no time left for a fallback
            except openai.APIError as exc:
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

    def _answer(self, completion: ChatCompletion, upstream: Upstream) -> ChatAnswer:
        if not completion.choices or completion.usage is None:
            raise UpstreamError(
                "The model returned an answer without choices or usage."
            )
        choice = completion.choices[0]
        model = completion.model or upstream.model
        return ChatAnswer(
            text=choice.message.content or "",
            # The SDK types it as always set; OpenAI-compatible servers send null.
            finish_reason=FinishReason.of(
                cast("str | None", choice.finish_reason) or "stop"
            ),
            model=model,
            usage=self._usage(model, completion.usage),
            logprobs=_token_logprobs(choice),
        )

    def _usage(self, model: str, usage: CompletionUsage) -> TokenUsage:
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        priced = TokenUsage(
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
        self.metrics.count_usage(model, priced)  # each upstream answer passes here once
        return priced


# The caller went away, or our deadline passed: the upstream may have
# generated (and billed) the answer all the same.
_CALLER_LEFT = (asyncio.CancelledError, GeneratorExit, UpstreamTimeout)


def _outcome(error: BaseException) -> str:
    if isinstance(error, AppError):
        return error.code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL_SERVER_ERROR"


async def _unanswered(
    meter: Meter, hold: Hold, model: str, error: BaseException
) -> None:
    """A call that got no answer: nothing charged if the upstream refused or
    failed; the reservation if we stopped waiting (it may have billed), or
    if it answered in a shape we cannot use (it billed, only did not say)."""
    if isinstance(error, _CALLER_LEFT) or isinstance(error.__cause__, MalformedAnswer):
        await meter.settle(
            hold, model=model, upstream=None, usage=None, outcome=_outcome(error)
        )
    else:
        await meter.release(hold, model=model, outcome=_outcome(error))


MALFORMED_CHUNK = "The model's stream sent a malformed chunk."
EMPTY_ANSWER = "The model returned an empty answer."


def _token_logprobs(choice: Any) -> list[TokenLogprob] | None:
    content = choice.logprobs.content if choice.logprobs else None
    if not content:
        return None
    return [
        (e.token, e.logprob, [(a.token, a.logprob) for a in e.top_logprobs or []])
        for e in content
    ]


def _stream_usage(usage: object) -> CompletionUsage:
    try:
        return CompletionUsage.model_validate(usage)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise UpstreamError(MALFORMED_CHUNK) from exc


async def _as_entry(answer: Awaitable[ChatAnswer]) -> dict[str, Any]:
    return (await answer).to_entry()


def build_llm(
    settings: Settings,
    http_client: httpx2.AsyncClient | None = None,
    *,
    local_model_url: str | None = None,
    timer: Callable[[], float] = time.monotonic,
    redis: SharedRedis | None = None,
    metrics: Metrics,
    tracing: Tracing,
) -> LLM:
    """The shared clients, built once at start-up from settings.

    `http_client` replaces the HTTP client of every remote upstream (tests put
    a fake upstream there). `local_model_url` is where the embedded model's
    server answers (default: LOCAL_MODEL_URL). `timer` measures the circuit
    breakers' reset period. `redis`, the app's, keeps the response cache when
    given; `metrics` and `tracing` are the app's.
    """
    cache = response_cache(settings, redis, metrics, tracing)

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(
            settings.circuit_breaker_failures,
            settings.circuit_breaker_reset_seconds,
            timer,
        )

    def client(
        base_url: str | None, api_key: str | None, **options: Any
    ) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            # Self-hosted OpenAI-compatible servers often need no key at all.
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=settings.llm_timeout_seconds,
            max_retries=0,  # ours: see Upstream.post
            **options,
        )

    if settings.backend == "local":
        url = local_model_url or settings.local_model_url
        if not url:
            raise ValueError("the embedded backend needs the model server's URL")
        embedded = EmbeddedServer(url, timeout=settings.llm_timeout_seconds)
        local = client(embedded.api_url, None, http_client=embedded.http)
        upstream = Upstream(
            "embedded",
            local,
            settings.local_model_name,
            # A full queue answers 429 at once; retrying would only wait in line.
            retries=0,
            # A process that died is restarted within a second or so, and
            # fails fast meanwhile: pausing all requests would only delay
            # the first answer after its recovery.
            breaker=NeverOpen,
            describe_error=embedded_error,
        )
        return LLM(
            [upstream],
            settings,
            embedded=embedded,
            cache=cache,
            metrics=metrics,
            tracing=tracing,
        )

    def remote(
        name: str, base_url: str | None, key: SecretStr | None, model: str
    ) -> Upstream:
        secret = key.get_secret_value() if key else None
        return Upstream(
            name,
            client(base_url, secret, http_client=http_client),
            model,
            retries=settings.llm_max_retries,
            breaker=breaker,
            formats=FormatNegotiation(name, settings.pinned_structured_output),
        )

    upstreams = []
    if settings.upstream_configured:
        upstreams.append(
            remote(
                "primary",
                settings.openai_base_url,
                settings.openai_api_key,
                settings.openai_model,
            )
        )
    if upstreams and settings.llm_fallback_base_url:
        upstreams.append(
            remote(
                "fallback",
                settings.llm_fallback_base_url,
                settings.llm_fallback_api_key,
                settings.llm_fallback_model or settings.openai_model,
            )
        )
    probes = UpstreamProbes(
        [
            ModelsProbe(upstream, max_age=settings.llm_models_cache_seconds)
            for upstream in upstreams
        ],
        settings.model_prices,
    )
    return LLM(
        upstreams,
        settings,
        cache=cache,
        probes=probes,
        metrics=metrics,
        tracing=tracing,
    )


def response_cache(
    settings: Settings, redis: SharedRedis | None, metrics: Metrics, tracing: Tracing
) -> ResponseCache | None:
    if settings.cache_ttl_seconds <= 0:
        return None
    return ResponseCache(
        ttl_seconds=settings.cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
        redis=redis,
        metrics=metrics,
        tracing=tracing,
    )


class CallerLLM:
    """The LLM as one caller uses it: answers from the cache scope and with
    the cache mode of their request. Tasks get this, never the LLM itself."""

    def __init__(
        self, llm: LLM, cache: CachePolicy, meter: Meter | None = None
    ) -> None:
        self.llm = llm
        self.cache = cache
        self.meter = meter  # budgets and the ledger

    @property
    def settings(self) -> Settings:
        return self.llm.settings

    async def chat(self, messages: list[dict[str, str]], **options: Any) -> ChatAnswer:
        return await self.llm.chat(
            messages, cache=self.cache, meter=self.meter, **options
        )

    def stream_chat(
        self, messages: list[dict[str, str]], **options: Any
    ) -> AsyncGenerator[str | ChatStreamEnd, None]:
        return self.llm.stream_chat(messages, meter=self.meter, **options)
