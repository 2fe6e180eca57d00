"""Which operations a request may run in one JSON response: GET runs queries
only (a mutation over GET is 405 with `Allow: POST`), POST mutations too, and
a subscription needs a stream (SSE, multipart or the WebSocket)."""

from __future__ import annotations

from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import (
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)
from strawberry.types.graphql import OperationType

from gptmini_graphql.errors import METHOD_NOT_ALLOWED, OPERATION_RESOLUTION_FAILURE
from gptmini_graphql.http.negotiation import SSE
from gptmini_graphql.http.refusals import Refusal, bad_request

_BY_METHOD = {
    "GET": frozenset({OperationType.QUERY}),
    "POST": frozenset({OperationType.QUERY, OperationType.MUTATION}),
}

# What Strawberry's execute raises, before anything runs, about the operation.
OPERATION_ERRORS = (
    InvalidOperationTypeError,
    CannotGetOperationTypeError,
    MissingQueryError,
)


def allowed_operation_types(method: str) -> set[OperationType]:
    return set(_BY_METHOD.get(method, ()))


def refusal_for(error: Exception) -> Refusal:
    """What to tell the client of one of OPERATION_ERRORS."""
    if isinstance(error, InvalidOperationTypeError):
        if error.operation_type is OperationType.MUTATION:
            return Refusal(
                405,
                METHOD_NOT_ALLOWED,
                "A mutation must be sent with POST.",
                headers={"Allow": "POST"},
            )
        return bad_request(
            f"A subscription streams: send it with Accept: {SSE} (or "
            "multipart/mixed;subscriptionSpec=1.0), or over the "
            "graphql-transport-ws WebSocket."
        )
    if isinstance(error, CannotGetOperationTypeError):
        return Refusal(
            400,
            OPERATION_RESOLUTION_FAILURE,
            error.as_http_error_reason()
            + " Name the operation to run with operationName.",
            request_error=True,
        )
    return bad_request('No GraphQL query in the request: send "query".')
