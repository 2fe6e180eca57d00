"""Persisted queries at the endpoint: a hash becomes the query text to run,
over HTTP and over the WebSocket alike (an allowlist must not have a
WebSocket-shaped hole in it). What the modes mean: persisted_queries.py.
"""

from __future__ import annotations

from strawberry.http import GraphQLRequestData, GraphQLRequestProtocol
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    SubscribeMessagePayload,
)

from gptmini_graphql.errors import (
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_SUPPORTED,
)
from gptmini_graphql.http.parameters import Parameters
from gptmini_graphql.http.refusals import Refusal, bad_request
from gptmini_graphql.http.status import NO_CACHE
from gptmini_graphql.persisted_queries import PersistedQueries, PersistedQueryError


async def request_data(
    persisted_queries: PersistedQueries,
    params: Parameters,
    protocol: GraphQLRequestProtocol,
) -> tuple[GraphQLRequestData, tuple[str, str] | None]:
    """The operation to run, and for an APQ registration the (hash, query)
    to store once it ran; or a Refusal."""
    try:
        resolved = await persisted_queries.resolve(
            params.query, params.extensions, params.document_id
        )
    except PersistedQueryError as error:
        miss = error.code in (PERSISTED_QUERY_NOT_FOUND, PERSISTED_QUERY_NOT_SUPPORTED)
        raise Refusal(
            400,
            error.code,
            error.message,
            request_error=error.request_error,
            headers=NO_CACHE if miss else None,
        ) from error
    if resolved.query is None:
        raise bad_request('No GraphQL query in the request: send "query".')
    data = GraphQLRequestData(
        query=resolved.query,
        variables=params.variables,
        operation_name=params.operation_name,
        extensions=params.extensions,
        protocol=protocol,
    )
    register = resolved.register and (resolved.register, resolved.query)
    return data, register or None


async def subscribe_payload(
    persisted_queries: PersistedQueries, payload: SubscribeMessagePayload
) -> SubscribeMessagePayload:
    """A graphql-transport-ws `subscribe` payload with its query text in
    place; PersistedQueryError when it names a hash it may not run."""
    extensions = payload.get("extensions")
    resolved = await persisted_queries.resolve(
        payload.get("query"), extensions if isinstance(extensions, dict) else None
    )
    if resolved.query is None:
        return payload
    with_query = payload.copy()
    with_query["query"] = resolved.query
    return with_query
