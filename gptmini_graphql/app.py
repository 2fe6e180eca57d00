"""create_app(settings): the routes, and a lifespan that owns the shared clients."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from gptmini_graphql import __version__
from gptmini_graphql.drain import on_shutdown_signals
from gptmini_graphql.graphiql import graphiql_static_route
from gptmini_graphql.http import GraphQLEndpoint
from gptmini_graphql.llm.calls import NOT_CONFIGURED
from gptmini_graphql.llm.probe import without_credentials
from gptmini_graphql.logging import RequestIdMiddleware, configure_logging
from gptmini_graphql.malloc import tune_malloc
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.metrics_middleware import MetricsMiddleware
from gptmini_graphql.middleware import (
    BodySizeLimit,
    CancelOnDisconnect,
    CSRFPrevention,
    SecurityHeaders,
)
from gptmini_graphql.persisted_queries import PersistedQueries
from gptmini_graphql.schema import build_schema, root_field_names
from gptmini_graphql.services import Services
from gptmini_graphql.settings import Settings
from gptmini_graphql.tracing import Tracing

logger = logging.getLogger("gptmini_graphql")

# Net allocations of container objects between two passes of the garbage
# collector over its youngest generation while the app runs (Python's
# default: 700). See the lifespan.
YOUNG_COLLECTION_THRESHOLD = 10_000


def create_app(
    settings: Settings | None = None,
    *,
    llm_http_client: httpx2.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.monotonic,
    tracing: Tracing | None = None,
) -> Starlette:
    """`llm_http_client` replaces the upstreams' HTTP client: how tests reach a fake
    upstream; `clock` is the time tokens and keys expire by, `timer` the one
    circuit breakers wait by (tests move them); `tracing` replaces the tracer
    the environment asks for (tests read spans)."""
    tune_malloc()  # before any password is hashed: see malloc.py
    settings = settings or Settings()
    settings.check()
    configure_logging(settings.log_level)
    persisted_queries = PersistedQueries.from_settings(settings)
    schema = build_schema(settings)
    graphql = GraphQLEndpoint(
        schema,
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        graphiql=settings.graphiql_enabled,
        persisted_queries=persisted_queries,
    )
    # The app's own, used by its Services, middleware and routes.
    metrics = Metrics(root_field_names(schema))
    if tracing is None:  # on only if OTEL_EXPORTER_OTLP_ENDPOINT says where to
        tracing = Tracing.from_environment()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        services = await Services.start(
            settings,
            llm_http_client,
            clock,
            timer,
            persisted_queries,
            metrics,
            tracing,
        )
        # What start-up built (modules, the schema, and on a start that
        # migrates, SQLAlchemy's and Alembic's) lives as long as the app: kept
        # out of the collector's sight, it is not walked again by every full
        # collection under load. (SQLAlchemy, when the requests still used
        # it, made the heap half as large again, and summarize at 64
        # concurrent requests 10% dearer until this.)
        gc.freeze()
        # The collector's youngest generation is examined every 700 net
        # allocations by default: a few times per request, each pass walking
        # what the requests in flight hold (their coroutines' frames, their
        # contexts), which survive it only to be walked again in the next
        # generation. Every YOUNG_COLLECTION_THRESHOLD allocations instead
        # (what a few requests allocate): the same garbage goes, a few
        # requests later, for a fraction of the passes.
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
        logger.info(
            "started",
            extra={
                "version": __version__,
                "backend": settings.backend,
                "model": services.llm.model,
                "upstream": without_credentials(settings.openai_base_url)
                if settings.backend == "openai" and settings.openai_base_url
                else None,
                "rate_limit_storage": "redis" if settings.redis_url else "memory",
                "database": services.accounts.db.description,
            },
        )
        if not services.llm.configured:
            logger.warning(NOT_CONFIGURED)
        for problem in [] if settings.production else settings.insecure_defaults():
            logger.warning("development mode: " + problem)
        try:
            with on_shutdown_signals(services.drain, settings.shutdown_grace_seconds):
                yield {"services": services}
        finally:
            try:
                await services.aclose()
            finally:
                # A process that makes apps again (tests) gets its collector
                # back as it was, even when a service failed to close.
                gc.set_threshold(*thresholds)
                gc.unfreeze()
            logger.info("stopped")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        llm = request.state.services.llm
        reason = await llm.not_ready()
        if reason is None:
            # Warnings (an unlisted model, a price that cannot be right) leave
            # it ready: see llm/probe.py.
            status = await llm.probes.status()
            return JSONResponse({"status": "ready", "model": llm.model, **status})
        return JSONResponse({"status": "not ready", "reason": reason}, 503)

    return Starlette(
        # The API first: the router tries each route in turn, and no two of
        # these share a path and a scope type.
        routes=[
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics.endpoint),
            graphiql_static_route(),
        ],
        # Outermost first: every response gets its request id and headers, and
        # CORS answers preflights before CSRF prevention looks at a request.
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(RequestIdMiddleware),
            Middleware(CancelOnDisconnect),
            *tracing.middleware(),
            Middleware(SecurityHeaders, hsts=settings.production),
            *cors(settings.cors_allow_origins),
            Middleware(
                CSRFPrevention,
                path="/graphql",
                allowed_origins=settings.cors_allow_origins,
            ),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )


def cors(origins: list[str]) -> list[Middleware]:
    """Browsers on these origins may call the API (none unless configured)."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Apollo-Require-Preflight",
                "X-Apollo-Operation-Name",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    ]
