"""The /graphql endpoint: Strawberry's ASGI view with our context, error
masking, operation log line and offline GraphiQL."""

from __future__ import annotations

import logging
import time

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import (
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_MESSAGE,
    INTERNAL_SERVER_ERROR,
    AppError,
    BadUserInput,
)
from gptmini_graphql.graphiql import render_graphiql_page

logger = logging.getLogger("gptmini_graphql.graphql")

OK = "OK"


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        context = RequestContext(
            services=request.state.services,
            connection=request,
            request_id=request.state.request_id,
        )
        # process_result receives only the request: leave the context on it.
        request.state.graphql_context = context
        return context

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(render_graphiql_page(endpoint=request.url.path))

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response: GraphQLHTTPResponse = {"data": result.data}
        codes = []
        if result.errors:
            response["errors"] = [format_error(error) for error in result.errors]
            codes = [error["extensions"]["code"] for error in response["errors"]]
        if result.extensions:
            response["extensions"] = result.extensions
        log_operation(request.state.graphql_context, codes)
        return response


def format_error(error: GraphQLError) -> dict:
    """Our errors as they are, GraphQL's own with a code, anything else masked."""
    formatted = dict(error.formatted)
    original = error.original_error
    if isinstance(original, AppError):
        formatted["message"] = original.message
        formatted["extensions"] = original.extensions
    elif error.path is None and (
        original is None or isinstance(original, GraphQLError)
    ):
        # No path: raised before execution, by the parser, validation or
        # variable coercion (graphql-core nests the latter's own error).
        formatted["extensions"] = {"code": _request_error_code(error)}
    else:
        # A bug of ours, or a library's: the client learns nothing of it.
        logger.error(
            "unexpected error in resolver",
            extra={"path": error.path},
            exc_info=(type(original), original, original.__traceback__)
            if original
            else None,
        )
        formatted["message"] = INTERNAL_MESSAGE
        formatted["extensions"] = {"code": INTERNAL_SERVER_ERROR}
    return formatted


def _request_error_code(error: GraphQLError) -> str:
    """Errors before execution: the document or the variables are at fault."""
    if error.message.startswith("Syntax Error"):
        return GRAPHQL_PARSE_FAILED
    if error.message.startswith("Variable '$"):
        return BadUserInput.code
    return GRAPHQL_VALIDATION_FAILED


def log_operation(context: RequestContext, codes: list[str]) -> None:
    results = context.results
    costs = [r.usage.cost_usd for r in results]
    outcome = codes[0] if codes else OK
    logger.log(
        logging.INFO if outcome == OK else logging.WARNING,
        "graphql operation",
        extra={
            "user": context.user,
            "operation": context.operation_name,
            "fields": context.fields,
            "model": results[0].model if results else None,
            "prompt_tokens": sum(r.usage.prompt_tokens for r in results),
            "completion_tokens": sum(r.usage.completion_tokens for r in results),
            "cost_usd": None if None in costs else sum(costs),
            "latency_ms": round((time.perf_counter() - context.started) * 1000, 2),
            "outcome": outcome,
            "error_codes": codes,
        },
    )
