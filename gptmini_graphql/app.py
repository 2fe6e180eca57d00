"""create_app(settings): the routes, and a lifespan that owns the shared clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from gptmini_graphql import __version__
from gptmini_graphql.context import Services
from gptmini_graphql.endpoint import GraphQLEndpoint
from gptmini_graphql.graphiql import graphiql_static_route
from gptmini_graphql.llm.client import NOT_CONFIGURED
from gptmini_graphql.logging import RequestIdMiddleware, configure_logging
from gptmini_graphql.schema import build_schema
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql")


def create_app(
    settings: Settings | None = None,
    *,
    llm_http_client: httpx2.AsyncClient | None = None,
) -> Starlette:
    """`llm_http_client` replaces the SDK's HTTP client: how tests reach a fake upstream."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    graphql = GraphQLEndpoint(
        build_schema(settings.graphql_cache_size),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        services = await Services.start(settings, llm_http_client)
        logger.info(
            "started",
            extra={
                "version": __version__,
                "backend": settings.backend,
                "model": services.llm.model,
                "upstream": settings.openai_base_url
                if settings.backend == "openai"
                else None,
                "rate_limit_storage": "redis" if settings.redis_url else "memory",
            },
        )
        if services.llm.client is None:
            logger.warning(NOT_CONFIGURED)
        try:
            yield {"services": services}
        finally:
            await services.aclose()
            logger.info("stopped")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        llm = request.state.services.llm
        if await llm.ready():
            return JSONResponse({"status": "ready", "model": llm.model})
        reason = NOT_CONFIGURED if llm.client is None else "The model is loading."
        return JSONResponse({"status": "not ready", "reason": reason}, 503)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            graphiql_static_route(),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
