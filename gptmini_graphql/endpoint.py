"""The /graphql endpoint: Strawberry's ASGI view with our context, the
operation's log line and offline GraphiQL."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.base import BaseSchema
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gptmini_graphql.auth.tokens import bearer_token
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import INTERNAL_SERVER_ERROR, RateLimited, Unauthenticated
from gptmini_graphql.extensions.errors import coded
from gptmini_graphql.graphiql import render_graphiql_page
from gptmini_graphql.operation_log import log_operation


class _TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Strawberry refuses past the cap too, but with an error that has no code.
        cap = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and cap is not None
            and len(self.operations) >= cap
            and message["id"] not in self.operations
        ):
            error = RateLimited(
                f"At most {cap} subscriptions may run at once on one connection."
            )
            payload = {"message": error.message, "extensions": error.extensions}
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [payload]}
            )
            return
        await super().handle_subscribe(message)


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    """Queries and mutations over GET and POST; subscriptions over
    graphql-transport-ws, SSE (graphql-sse) and multipart HTTP (Apollo's)."""

    graphql_transport_ws_handler_class = _TransportWSHandler

    def __init__(
        self, schema: BaseSchema, *, max_subscriptions_per_connection: int = 5
    ):
        super().__init__(
            schema,
            subscription_protocols=(
                GRAPHQL_TRANSPORT_WS_PROTOCOL,
                GRAPHQL_SSE_PROTOCOL,
                MULTIPART_SUBSCRIPTION_PROTOCOL,
            ),
            max_subscriptions_per_connection=max_subscriptions_per_connection,
        )

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

    async def on_ws_connect(self, context: RequestContext) -> UnsetType:
        """A WebSocket must name its user in connection_init, or it is closed
        with 4403 Forbidden."""
        try:
            token = bearer_token(context.authorization)
            if token is None:
                raise Unauthenticated("connection_init must carry Authorization.")
            context.user = context.services.tokens.verify(token)
        except Unauthenticated as error:
            raise ConnectionRejectionError(
                {"message": error.message, "extensions": error.extensions}
            ) from error
        return UNSET

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(render_graphiql_page(endpoint=request.url.path))

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # ErrorCodesExtension coded these inside the operation, except those
            # raised before it started (a parse error from the parser cache).
            result.errors = [coded(error) for error in result.errors]
        response = await super().process_result(request, result)
        codes = [
            error.get("extensions", {}).get("code", INTERNAL_SERVER_ERROR)
            for error in response.get("errors", ())
        ]
        context: RequestContext = request.state.graphql_context
        if not context.streaming:  # a stream logs itself once, when it ends
            log_operation(context, codes)
        return response
