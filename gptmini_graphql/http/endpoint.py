"""The /graphql endpoint: Strawberry's ASGI view speaking GraphQL over HTTP as
its specification (graphql-over-http) asks, with persisted queries, our
context, the operation's log line and offline GraphiQL.

An HTTP request takes these steps, each a module of this package:

1. `get_sub_response`: negotiate the answer's media type (negotiation.py).
2. `get_context`: the context resolvers see, kept on the exchange.
3. `parse_http_body`: refuse what we cannot answer (406), read and check
   the parameters (parameters.py), turn a persisted query's hash into its
   text (persisted.py).
4. `execute_single`: run it, if its method may (operation_types.py); a
   subscription goes to Strawberry's stream instead.
5. `process_result`: code the errors, log the operation, register an APQ
   document that ran, give a request error its status (status.py).
6. `create_response`: the body in the negotiated media type.

A step refuses by raising a `Refusal` (refusals.py); `__call__` answers it.
"""

from __future__ import annotations

import json
from typing import Any, cast

from cross_web import (
    AsyncHTTPRequestAdapter,
    HTTPException,
    StarletteRequestAdapter,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.streaming import HTTPStreamTransport
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import NOT_ACCEPTABLE
from gptmini_graphql.extensions.errors import coded
from gptmini_graphql.graphiql import render_graphiql_page
from gptmini_graphql.http import event_stream, persisted
from gptmini_graphql.http.exchange import (
    Exchange,
    ExchangeResponse,
    exchange_of,
    forget_exchange,
)
from gptmini_graphql.http.negotiation import GRAPHQL_RESPONSE_JSON, JSON, SSE, negotiate
from gptmini_graphql.http.operation_types import (
    OPERATION_ERRORS,
    allowed_operation_types,
    refusal_for,
)
from gptmini_graphql.http.parameters import read_parameters
from gptmini_graphql.http.refusals import Refusal
from gptmini_graphql.http.status import (
    code_of,
    is_request_error,
    request_error_status,
)
from gptmini_graphql.http.websocket import TransportWSHandler, authenticate_connection
from gptmini_graphql.operation_log import log_operation
from gptmini_graphql.persisted_queries import PersistedQueries


class _RequestAdapter(StarletteRequestAdapter):
    """Strawberry's view of the request, with the request's exchange."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    """Queries and mutations over GET and POST; subscriptions over
    graphql-transport-ws, SSE (graphql-sse) and multipart HTTP (Apollo's)."""

    graphql_transport_ws_handler_class = TransportWSHandler
    request_adapter_class = _RequestAdapter

    def __init__(
        self,
        schema: BaseSchema,
        *,
        max_subscriptions_per_connection: int = 5,
        graphiql: bool = True,
        persisted_queries: PersistedQueries | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            subscription_protocols=(
                GRAPHQL_TRANSPORT_WS_PROTOCOL,
                GRAPHQL_SSE_PROTOCOL,
                MULTIPART_SUBSCRIPTION_PROTOCOL,
            ),
            max_subscriptions_per_connection=max_subscriptions_per_connection,
        )
        self.persisted_queries = persisted_queries or PersistedQueries()
        # The HTTP transports subscriptions stream with, for negotiation.
        self.streams: list[HTTPStreamTransport] = [
            transport()
            for protocol in self.protocols
            if (transport := self.stream_transport_classes_by_protocol.get(protocol))
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            try:
                response = await self.answer(request)
            except Refusal as refusal:
                response = self._refuse(request, refusal)
            except HTTPException as error:
                response = self._refuse(request, Refusal.from_http_exception(error))
            await response(scope, receive, send)
        finally:
            forget_exchange(request)

    async def answer(self, request: Request) -> Response:
        """Strawberry's `run` for an HTTP request, for the two results one
        can have here: one result, or a subscription's stream (batches are
        refused, @defer and @stream off). Strawberry's tells them apart by
        an isinstance against a runtime Protocol, which looks the result's
        attributes up statically: 2% of a cache hit. (A WebSocket's
        connection is Strawberry's `run` alone.)"""
        adapter = self.request_adapter_class(request)
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        if not self.is_request_allowed(adapter):
            raise HTTPException(405, "GraphQL only supports GET and POST requests.")
        if self.should_render_graphql_ide(adapter):
            return await self.render_graphql_ide(request)
        try:
            request_data = await self.parse_http_body(adapter)
        except json.JSONDecodeError as error:
            raise HTTPException(400, "Unable to parse request body as JSON") from error
        except KeyError as error:
            raise HTTPException(400, "File(s) missing in form data") from error
        result = await self.execute_operation(
            request=request,
            request_adapter=adapter,
            request_data=request_data,
            context=context,
            root_value=None,
            sub_response=sub_response,
        )
        if not isinstance(result, ExecutionResult):
            return await self._create_streaming_response(
                request, result, request_data.protocol, sub_response
            )
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        return self.create_response(response_data, sub_response)

    # 1. negotiation -------------------------------------------------------------

    async def get_sub_response(self, request: Request | WebSocket) -> ExchangeResponse:
        assert isinstance(request, Request)  # a WebSocket has no sub-response
        exchange = negotiate(request.headers.get("accept"), self.streams)
        exchange.attach(request)
        return ExchangeResponse(exchange)

    # 2. context --------------------------------------------------------------------

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        context = RequestContext(
            services=request.state.services,
            connection=request,
            request_id=request.state.request_id,
        )
        if isinstance(response, ExchangeResponse):
            response.exchange.context = context
        return context

    async def on_ws_connect(self, context: RequestContext) -> UnsetType:
        await authenticate_connection(context)
        return cast(UnsetType, UNSET)  # acknowledged, with no payload

    def should_render_graphql_ide(self, request: Any) -> bool:
        """A browser asking for the page: GET, HTML, and no operation at all.

        With GraphiQL off, such a request is an ordinary GraphQL request
        without a query: a 400 that says so.
        """
        # The query string is parsed only for a GET that asks for HTML.
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and not any(
                name in request.query_params
                for name in ("query", "extensions", "documentId")
            )
        )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(render_graphiql_page(endpoint=request.url.path))

    # 3. parameters and persisted queries ------------------------------------------

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData:
        assert isinstance(request, _RequestAdapter)
        exchange = _exchange(request.request)
        if exchange.media_type is None:
            raise Refusal(
                406,
                NOT_ACCEPTABLE,
                f"Accept {GRAPHQL_RESPONSE_JSON} or {JSON} (or {SSE} for a "
                "subscription).",
            )
        params = await read_parameters(request, self.decode_json)
        data, exchange.register = await persisted.request_data(
            self.persisted_queries, params, exchange.protocol
        )
        return data

    # 4. execution --------------------------------------------------------------------

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """A query or mutation answered in one JSON response (Strawberry
        would run a subscription here as if it were a query, and fail)."""
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed_operation_types(request.method),
                operation_extensions=request_data.extensions,
            )
        except OPERATION_ERRORS as error:
            raise refusal_for(error) from error

    # 5. the result -------------------------------------------------------------------

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # ErrorCodesExtension coded these inside the operation, except those
            # raised before it started (a parse error from the parser cache).
            result.errors = [coded(error) for error in result.errors]
        # What Strawberry's view method returns, without its coroutine: a
        # stream's every event passes here.
        response = process_result(result)
        exchange = _exchange(request)
        context = exchange.context
        assert context is not None
        errors = response.get("errors") or []
        if not context.streaming:  # a stream logs itself once, when it ends
            log_operation(context, [code_of(error) for error in errors])
        request_error = is_request_error(result)
        if exchange.register is not None and not request_error and context.user:
            # Only a document that ran, for a caller we know, is worth
            # remembering: anonymous registrations would be free storage.
            await self.persisted_queries.register(*exchange.register)
            exchange.register = None
        if exchange.protocol == "http" and request_error:
            # "If an error was raised before execution begins, the data entry
            # should not be present in the result" (GraphQL, Response).
            response.pop("data", None)
            if exchange.media_type == GRAPHQL_RESPONSE_JSON:
                exchange.status, exchange.headers = request_error_status(errors)
        return response

    # 6. the response ----------------------------------------------------------------

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        assert isinstance(sub_response, ExchangeResponse)
        exchange = sub_response.exchange
        context = exchange.context
        response = Response(
            self.encode_json(response_data),
            status_code=exchange.status,
            headers={
                # What the operation says of itself (RateLimit-*), then ours.
                **(context.response_headers if context is not None else {}),
                **exchange.headers,
                "Content-Type": f"{exchange.media_type or JSON}; charset=utf-8",
            },
        )
        # The raw lists themselves (each `.headers` would wrap its own).
        response.raw_headers.extend(sub_response.raw_headers)
        if sub_response.background:
            response.background = sub_response.background
        return response

    async def _create_streaming_response(
        self,
        request: Request,
        result: Any,
        protocol: Any,
        sub_response: Response,
    ) -> Response:
        """A subscription's results, framed as Strawberry's (event_stream.py)."""
        transport = next(each for each in self.streams if each.protocol == protocol)
        return event_stream.respond(
            self,
            request,
            result,
            transport,
            status_code=sub_response.status_code or 200,
            headers=sub_response.headers,
        )

    def _refuse(self, request: Request, refusal: Refusal) -> Response:
        exchange = exchange_of(request)
        if exchange is not None and exchange.context is not None:
            log_operation(exchange.context, [refusal.code])
        return refusal.response(exchange.media_type if exchange else None)


def _exchange(request: Request) -> Exchange:
    exchange = exchange_of(request)
    assert exchange is not None, "get_sub_response negotiates first"
    return exchange
