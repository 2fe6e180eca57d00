"""The LLM built once at start-up from settings: its upstreams (OpenAI or
any OpenAI-compatible server, a fallback, or the embedded model's server),
their clients and circuit breakers, and the response cache."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
from pydantic import SecretStr

from gptmini_graphql.circuit_breaker import CircuitBreaker, NeverOpen
from gptmini_graphql.llm.cache import ResponseCache
from gptmini_graphql.llm.chat_client import ChatClient
from gptmini_graphql.llm.client import LLM
from gptmini_graphql.llm.local.connection import EmbeddedServer, embedded_error
from gptmini_graphql.llm.probe import ModelsProbe, UpstreamProbes
from gptmini_graphql.llm.structured import FormatNegotiation
from gptmini_graphql.llm.transport import DEFAULT_CONNECTION_LIMITS, AiohttpTransport
from gptmini_graphql.llm.upstream import Upstream
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.settings import Settings
from gptmini_graphql.shared_redis import SharedRedis
from gptmini_graphql.tracing import Tracing

# Where requests go when OPENAI_BASE_URL is not set: OpenAI's API.
OPENAI_URL = "https://api.openai.com/v1"


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
        base_url: str | None, api_key: str | None, http: httpx2.AsyncClient | None
    ) -> ChatClient:
        return ChatClient(
            base_url or OPENAI_URL,
            # Self-hosted OpenAI-compatible servers often need no key at all
            # (a placeholder, as the openai SDK needed one: some want any).
            api_key or "not-needed",
            http or upstream_http_client(settings),
        )

    if settings.backend == "local":
        url = local_model_url or settings.local_model_url
        if not url:
            raise ValueError("the embedded backend needs the model server's URL")
        embedded = EmbeddedServer(url, timeout=settings.llm_timeout_seconds)
        local = client(embedded.api_url, None, embedded.http)
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
            client(base_url, secret, http_client),
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


def upstream_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The openai SDK's defaults (limits, redirects), which our upstreams
    always had, over aiohttp (transport.py); its transport is what
    chat_client.py sends through."""
    return httpx2.AsyncClient(
        transport=AiohttpTransport(DEFAULT_CONNECTION_LIMITS),
        timeout=settings.llm_timeout_seconds,
        follow_redirects=True,
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
