"""The /graphql endpoint: Strawberry's ASGI view speaking GraphQL over HTTP as
its specification (graphql-over-http) asks, with persisted queries, our
context, the operation's log line and offline GraphiQL.

Media types (by the request's `Accept`):

* `application/graphql-response+json` when the client lists it (first among
  equals); `application/json` for `application/json`, `*/*`, `application/*`
  or no Accept at all; `text/event-stream` and Apollo's
  `multipart/mixed;subscriptionSpec=1.0` stream; anything else is 406.
  Every JSON response says `charset=utf-8`.

Status codes:

* A GraphQL result is 200 with `application/json`, whatever its errors.
* With `application/graphql-response+json`, a request error (the document
  does not parse or validate, variables do not coerce, the operation is
  refused before it runs) has no `data` entry and a 4xx or 5xx status
  (REQUEST_ERROR_STATUS; 400 unless listed); results of execution are 200.
* A request that is not a GraphQL request at all is refused with either
  media type: 400 (bad JSON, a parameter of the wrong type, no query), 405
  (a mutation over GET: `Allow: POST`; a method other than GET and POST),
  406, 415 (a body that is not `application/json` in UTF-8).

Every refusal is a GraphQL-shaped body whose errors carry `extensions.code`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException, StarletteRequestAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import (
    GraphQLHTTPResponse,
    GraphQLRequestData,
    GraphQLRequestProtocol,
)
from strawberry.schema.base import BaseSchema
from strawberry.schema.exceptions import (
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)
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
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from gptmini_graphql.auth.tokens import bearer_token
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import (
    BAD_REQUEST,
    INTERNAL_SERVER_ERROR,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    NOT_FOUND,
    OPERATION_RESOLUTION_FAILURE,
    PAYLOAD_TOO_LARGE,
    PERSISTED_QUERY_NOT_ALLOWED,
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_SUPPORTED,
    UNSUPPORTED_MEDIA_TYPE,
    DatabaseUnavailable,
    RateLimited,
    Unauthenticated,
    error_body,
)
from gptmini_graphql.extensions.errors import coded
from gptmini_graphql.graphiql import render_graphiql_page
from gptmini_graphql.operation_log import log_operation
from gptmini_graphql.persisted_queries import (
    PersistedQueries,
    PersistedQueryError,
)

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
SSE = "text/event-stream"

# With application/graphql-response+json, the status of a request error by
# its (first) code; any other code is 400.
REQUEST_ERROR_STATUS: dict[str, int] = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    PERSISTED_QUERY_NOT_ALLOWED: 403,
    PERSISTED_QUERY_NOT_FOUND: 404,
    RateLimited.code: 429,
    INTERNAL_SERVER_ERROR: 500,
    "UPSTREAM_ERROR": 502,
    "UPSTREAM_UNAVAILABLE": 503,
    "UPSTREAM_RATE_LIMITED": 503,
    "UPSTREAM_TIMEOUT": 504,
}
_HTTP_STATUS_CODES = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    406: NOT_ACCEPTABLE,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
}
# A persisted query miss must not be cached on the way (Apollo does the same).
_NO_CACHE = {"Cache-Control": "private, no-cache, must-revalidate"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class Refusal(Exception):
    """The request is answered with this error instead of being run.

    `request_error`: a GraphQL request error (200 with application/json,
    REQUEST_ERROR_STATUS with graphql-response+json); otherwise the request
    itself is refused with `status` whatever the media type.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        request_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.request_error = request_error


def _bad_request(message: str) -> Refusal:
    return Refusal(400, BAD_REQUEST, message)


@dataclass(slots=True)
class _Exchange:
    """What one HTTP request negotiated, kept on `request.state.graphql`."""

    media_type: str | None  # a JSON type, SSE, multipart/mixed, or None: 406
    protocol: GraphQLRequestProtocol = "http"
    status: int = 200
    headers: dict[str, str] | None = None
    register: tuple[str, str] | None = None  # APQ: (hash, query) once it ran


class _RequestAdapter(StarletteRequestAdapter):
    @property
    def request(self) -> Request:
        return self._request


def _media_range(item: str) -> tuple[str, dict[str, str]]:
    kind, *parts = item.split(";")
    params = {}
    for part in parts:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params


def _utf8(params: Mapping[str, str]) -> bool:
    return params.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def _quality(params: Mapping[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


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
            await self._send_error(message["id"], error.message, error.extensions)
            return
        payload = message.get("payload")
        if (
            self.connection_acknowledged
            and isinstance(payload, dict)
            and message["id"] not in self.operations
        ):
            # Persisted queries hold here too: an allowlist must not have a
            # WebSocket-shaped hole in it.
            extensions = payload.get("extensions")
            view: GraphQLEndpoint = self.view  # type: ignore[assignment]
            try:
                resolved = await view.persisted_queries.resolve(
                    payload.get("query"),
                    extensions if isinstance(extensions, dict) else None,
                )
            except PersistedQueryError as error:
                await self._send_error(
                    message["id"], error.message, {"code": error.code}
                )
                return
            if resolved.query is not None:
                message = {**message, "payload": {**payload, "query": resolved.query}}
        await super().handle_subscribe(message)

    async def _send_error(
        self, operation_id: str, message: str, extensions: dict[str, Any]
    ) -> None:
        payload = {"message": message, "extensions": extensions}
        await self.send_message(
            {"id": operation_id, "type": "error", "payload": [payload]}
        )


class GraphQLEndpoint(GraphQL[RequestContext, None]):
    """Queries and mutations over GET and POST; subscriptions over
    graphql-transport-ws, SSE (graphql-sse) and multipart HTTP (Apollo's)."""

    graphql_transport_ws_handler_class = _TransportWSHandler
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

    # --- the HTTP exchange ---------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except Refusal as refusal:
            response = self._refuse(request, refusal)
        except HTTPException as error:
            # What Strawberry refuses by itself (a batch when batching is off...).
            headers = {"Allow": "GET, POST"} if error.status_code == 405 else None
            code = _HTTP_STATUS_CODES.get(error.status_code, BAD_REQUEST)
            refusal = Refusal(error.status_code, code, error.reason, headers=headers)
            response = self._refuse(request, refusal)
        await response(scope, receive, send)

    async def get_sub_response(self, request: Request) -> Response:
        sub_response = await super().get_sub_response(request)
        exchange = self._negotiate(request.headers.get("accept"))
        sub_response.exchange = exchange  # type: ignore[attr-defined]
        request.state.graphql = exchange
        return sub_response

    def _negotiate(self, accept: str | None) -> _Exchange:
        """The most preferred media type we can answer in (RFC 9110 Accept)."""
        if accept is None or not accept.strip():
            return _Exchange(JSON)
        best: tuple[tuple[float, int, int], _Exchange] | None = None
        multipart = self._get_stream_transport("multipart-subscription")
        for index, item in enumerate(accept.split(",")):
            kind, params = _media_range(item)
            q = _quality(params)
            if q <= 0:
                continue
            specific = 1
            if kind in (GRAPHQL_RESPONSE_JSON, JSON):
                if not _utf8(params):
                    continue
                choice = _Exchange(kind)
            elif kind in ("*/*", "application/*"):
                choice, specific = _Exchange(JSON), 0
            elif kind == SSE and self._get_stream_transport("sse"):
                choice = _Exchange(SSE, protocol="sse")
            elif multipart is not None and multipart.accepts_content_type(kind, params):
                choice = _Exchange(kind, protocol="multipart-subscription")
            else:
                continue
            rank = (q, specific, -index)
            if best is None or rank > best[0]:
                best = (rank, choice)
        return best[1] if best else _Exchange(None)

    def should_render_graphql_ide(self, request: Any) -> bool:
        """A browser asking for the page: GET, HTML, and no operation at all.

        With GraphiQL off, such a request is an ordinary GraphQL request
        without a query: a 400 that says so.
        """
        params = request.query_params
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and not any(
                name in params for name in ("query", "extensions", "documentId")
            )
            and "text/html" in request.headers.get("accept", "")
        )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(render_graphiql_page(endpoint=request.url.path))

    async def parse_http_body(
        self, request: _RequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:  # type: ignore[override]
        exchange: _Exchange = request.request.state.graphql
        if exchange.media_type is None:
            raise Refusal(
                406,
                NOT_ACCEPTABLE,
                f"Accept {GRAPHQL_RESPONSE_JSON} or {JSON} (or {SSE} for a "
                "subscription).",
            )
        if request.method == "GET":
            data: object = self._query_params(request.query_params)
        else:
            self._check_content_type(request.content_type)
            data = self._decode(await request.get_body(), "The request body")
        if isinstance(data, list):
            self._validate_batch_request(data, protocol=exchange.protocol)
            # Nothing registers from a batch: a registration waits for its
            # document to prove valid, and that is known per request.
            return [
                (await self._request_data(item, exchange.protocol))[0] for item in data
            ]
        request_data, exchange.register = await self._request_data(
            data, exchange.protocol
        )
        return request_data

    def _check_content_type(self, content_type: str | None) -> None:
        if content_type is None:
            raise Refusal(
                415,
                UNSUPPORTED_MEDIA_TYPE,
                f"Send the request with Content-Type: {JSON}.",
            )
        kind, params = _media_range(content_type)
        if kind != JSON or not _utf8(params):
            raise Refusal(
                415,
                UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {kind!r} is not supported: send {JSON} in UTF-8.",
            )

    def _decode(self, raw: str | bytes, what: str) -> object:
        try:
            text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
            value = self.decode_json(text)
            if _SURROGATE_ESCAPE.search(text):
                _check_unicode(value)  # JSON may escape what UTF-8 cannot hold
        except (ValueError, RecursionError) as error:
            raise _bad_request(f"{what} is not valid JSON in UTF-8.") from error
        return value

    def _query_params(self, params: Mapping[str, str]) -> dict[str, object]:
        data: dict[str, object] = dict(params)
        for name in ("variables", "extensions"):
            value = data.get(name)
            if value == "":
                data[name] = None
            elif isinstance(value, str):
                data[name] = self._decode(value, f"The {name!r} parameter")
        return data

    async def _request_data(
        self, data: object, protocol: GraphQLRequestProtocol
    ) -> tuple[GraphQLRequestData, tuple[str, str] | None]:
        """The request's parameters, type-checked, with the query to run (and,
        for an APQ registration, the hash to store it under once it ran)."""
        if not isinstance(data, dict):
            raise _bad_request('The request must be a JSON object with a "query".')
        query = data.get("query")
        if query is not None and not isinstance(query, str):
            raise _bad_request('"query" must be a string.')
        operation_name = data.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise _bad_request('"operationName" must be a string or null.')
        for name in ("variables", "extensions"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise _bad_request(f'"{name}" must be an object or null.')
        try:
            resolved = await self.persisted_queries.resolve(
                query, data.get("extensions"), data.get("documentId")
            )
        except PersistedQueryError as error:
            miss = error.code in (
                PERSISTED_QUERY_NOT_FOUND,
                PERSISTED_QUERY_NOT_SUPPORTED,
            )
            raise Refusal(
                400,
                error.code,
                error.message,
                request_error=error.request_error,
                headers=_NO_CACHE if miss else None,
            ) from error
        if resolved.query is None:
            raise _bad_request('No GraphQL query in the request: send "query".')
        request_data = GraphQLRequestData(
            query=resolved.query,
            variables=data.get("variables"),
            operation_name=operation_name or None,
            extensions=data.get("extensions"),
            protocol=protocol,
        )
        register = resolved.register and (resolved.register, resolved.query)
        return request_data, register or None

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: _RequestAdapter,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """A query or mutation answered in one JSON response.

        Subscriptions need a stream (Strawberry would run one here as if it
        were a query, and fail); mutations need POST.
        """
        method = request_adapter.method
        allowed = {OperationType.QUERY}
        if method == "POST":
            allowed.add(OperationType.MUTATION)
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is OperationType.MUTATION:
                raise Refusal(
                    405,
                    METHOD_NOT_ALLOWED,
                    "A mutation must be sent with POST.",
                    headers={"Allow": "POST"},
                ) from error
            raise _bad_request(
                f"A subscription streams: send it with Accept: {SSE} (or "
                "multipart/mixed;subscriptionSpec=1.0), or over the "
                "graphql-transport-ws WebSocket."
            ) from error
        except CannotGetOperationTypeError as error:
            raise Refusal(
                400,
                OPERATION_RESOLUTION_FAILURE,
                error.as_http_error_reason()
                + " Name the operation to run with operationName.",
                request_error=True,
            ) from error
        except MissingQueryError as error:
            raise _bad_request(
                'No GraphQL query in the request: send "query".'
            ) from error

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        context = RequestContext(
            services=request.state.services,
            connection=request,
            request_id=request.state.request_id,
        )
        # process_result receives only the request: leave the context on it
        # (and on the response, for the headers it sets).
        request.state.graphql_context = context
        if isinstance(response, Response):
            response.context = context  # type: ignore[attr-defined]
        return context

    async def on_ws_connect(self, context: RequestContext) -> UnsetType:
        """A WebSocket must name its user in connection_init, or it is closed
        with 4403 Forbidden."""
        try:
            token = bearer_token(context.authorization)
            if token is None:
                raise Unauthenticated("connection_init must carry Authorization.")
            identities = context.services.accounts.identities
            context.identify(await identities.identify(token))
        except (Unauthenticated, DatabaseUnavailable) as error:
            raise ConnectionRejectionError(
                {"message": error.message, "extensions": error.extensions}
            ) from error
        return UNSET

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
        exchange: _Exchange = request.state.graphql
        request_error = _is_request_error(result)
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
                exchange.status, exchange.headers = _request_error_status(
                    response["errors"]
                )
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        exchange: _Exchange = sub_response.exchange  # type: ignore[attr-defined]
        # A batch answers for several operations: 200, each with its errors.
        batch = isinstance(response_data, list)
        context: RequestContext | None = getattr(sub_response, "context", None)
        response = Response(
            self.encode_json(response_data),
            status_code=200 if batch else exchange.status,
            headers={
                **({} if batch or context is None else context.response_headers),
                **({} if batch else exchange.headers or {}),
                "Content-Type": f"{exchange.media_type or JSON}; charset=utf-8",
            },
        )
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        return response

    def _refuse(self, request: Request, refusal: Refusal) -> Response:
        exchange: _Exchange | None = getattr(request.state, "graphql", None)
        media_type = exchange.media_type if exchange else None
        if media_type not in (JSON, GRAPHQL_RESPONSE_JSON):
            media_type = JSON
        status, headers = refusal.status, refusal.headers
        if refusal.request_error:
            if media_type == JSON:
                status = 200
            else:
                status, extra = _request_error_status(
                    [{"extensions": {"code": refusal.code}}]
                )
                headers = {**extra, **headers}
        context: RequestContext | None = getattr(request.state, "graphql_context", None)
        if context is not None:
            log_operation(context, [refusal.code])
        return Response(
            json.dumps(error_body(refusal.message, refusal.code)),
            status_code=status,
            headers={**headers, "Content-Type": f"{media_type}; charset=utf-8"},
        )


def _check_unicode(value: object) -> None:
    """ValueError for a lone surrogate (`"\\ud800"`) anywhere in `value`."""
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError is a ValueError
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key)
            _check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)


def _is_request_error(result: ExecutionResult) -> bool:
    """Raised before execution: no data, and no error belongs to a field."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


def _request_error_status(errors: list[Any]) -> tuple[int, dict[str, str]]:
    extensions = (errors[0].get("extensions") or {}) if errors else {}
    status = REQUEST_ERROR_STATUS.get(extensions.get("code"), 400)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in (429, 503) and isinstance(extensions.get("retryAfter"), int):
        headers["Retry-After"] = str(extensions["retryAfter"])
    if status == 404:
        headers.update(_NO_CACHE)
    return status, headers
