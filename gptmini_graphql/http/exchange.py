"""What one HTTP request to /graphql negotiated and learned on its way: the
request's one piece of state.

Strawberry's view hands its hooks either the request (`process_result`) or
the sub-response (`create_response`), so the exchange is reachable from both:
`request.state.graphql` and `ExchangeResponse.exchange` are the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from strawberry.http import GraphQLRequestProtocol

if TYPE_CHECKING:
    from gptmini_graphql.context import RequestContext


@dataclass(slots=True)
class Exchange:
    # The media type to answer in (a JSON type, SSE, multipart/mixed), or
    # None when the Accept header lists none of ours: 406.
    media_type: str | None
    protocol: GraphQLRequestProtocol = "http"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # APQ: (hash, query) to store once the document proved valid.
    register: tuple[str, str] | None = None
    context: RequestContext | None = None

    def attach(self, request: Request) -> None:
        request.state.graphql = self


def forget_exchange(request: Request) -> None:
    """Once the response is sent. The exchange reaches the request (through
    its context) and the request's state the exchange: left in place, that
    cycle and all it holds wait for the garbage collector, whose passes over
    such leftovers were a tenth of a cache hit's CPU."""
    request.scope.get("state", {}).pop("graphql", None)


def exchange_of(request: Request) -> Exchange | None:
    """The request's exchange, if it got as far as negotiating one. Read
    from the dict behind `request.state` (the scope's), in C: through
    State's __getattr__ it cost more, for every event of a stream."""
    exchange = request.scope.get("state", {}).get("graphql")
    return exchange if isinstance(exchange, Exchange) else None


class ExchangeResponse(Response):
    """Strawberry's sub-response (headers and background tasks a resolver may
    add), carrying the exchange to `create_response`."""

    def __init__(self, exchange: Exchange) -> None:
        # What Strawberry's own sub-response is, `Response()` less its
        # `content-length: 0`, set directly: not a header made to be deleted
        # (through a MutableHeaders) on every request.
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = []
        self.exchange = exchange
